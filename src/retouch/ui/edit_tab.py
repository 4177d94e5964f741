"""The Edit tab (the first, the main job) and the Generate tab, which sends pictures to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from retouch.core.schedulers import DEFAULT_STEPS
from retouch.edit.api import DEFAULT_STRENGTH, METHODS, REGION_CHOICES
from retouch.io.convert import read_input_image
from retouch.ui import edit_handlers
from retouch.ui.calls import MODEL_QUEUE, cancel_button, on_model, shown_errors
from retouch.ui.session import UISession

SEED_HELP = "Seed (empty: random; the one used is recorded)"
JS_SAFE_SEED = 2**31 - 1  # the dice's range: any seed works, this one reads well


@dataclass
class EditTab:
    """The Edit tab's inputs other tabs fill in ("send to Edit")."""

    picture: gr.File
    source: gr.Textbox


def picture_changed(path: str | None) -> tuple[Any, Any, Any]:
    """A new picture: its preview, the source caption from its recipe (when it has one) and the
    mask editor's background; a file that is not a picture is refused here, with the message."""
    if not path:
        return None, gr.update(), None
    shown_errors(read_input_image, path)
    caption = edit_handlers.caption_from_recipe(path)
    return path, (caption or gr.update()), {"background": path, "layers": [], "composite": None}


def build_edit_tab(session: UISession) -> EditTab:
    with gr.Tab("Edit", id="edit"):
        gr.Markdown(
            "Upload a picture, say what it shows and what you want: the edit changes only what the two "
            "captions differ in and keeps every other pixel."
        )
        with gr.Row():
            with gr.Column():
                picture = gr.File(label="Picture (PNG, JPEG or WebP)", type="filepath", elem_id="edit-picture")
                preview = gr.Image(
                    label="Input", type="filepath", interactive=False, height=256, elem_id="edit-preview"
                )
                source = gr.Textbox(label="Source caption: what the picture shows", elem_id="edit-source")
                target = gr.Textbox(label="Target caption: what you want", elem_id="edit-target")
                options = edit_options()
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="edit-run")
                    cancel = gr.Button("Cancel", elem_id="edit-cancel")
            with gr.Column():
                shown = [
                    gr.Image(label="Result", type="filepath", interactive=False, elem_id="edit-result", height=256),
                    gr.Markdown(elem_id="edit-region"),
                    gr.ImageSlider(label="Before / after", type="pil"),
                    gr.Image(label="Mask over the input", type="pil", interactive=False, height=256),
                    gr.File(label="Downloads: PNG, mask, RGBA layer, JSON report", file_count="multiple",
                            elem_id="edit-files"),
                    gr.JSON(label="Report"),
                ]

        def run_edit(
            picture: str | None,
            source: str,
            target: str,
            method: str,
            region: str,
            strength: str,
            steps: int,
            seed: str,
            guidance_scale: float | None,
            editor: dict | None,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way to ask for progress)
        ) -> list[Any]:
            settings = {"method": method, "region": region, "strength": strength, "steps": steps, "seed": seed}
            settings.update(guidance_scale=guidance_scale, editor=editor)
            view = on_model(session, request, edit_handlers.run_edit, picture, source, target, **settings)
            files = [str(path) for path in view.files]
            return [view.image, view.region, view.before_after, view.overlay, files, view.report]

        picture.change(picture_changed, picture, [preview, source, options["editor"]])
        event = run.click(
            run_edit,
            [picture, source, target, *options.values()],
            shown,
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=1,
        )
        cancel_button(session, cancel, event)
    return EditTab(picture=picture, source=source)


def edit_options() -> dict[str, Any]:
    """The collapsed options, keyed by ``run_edit``'s argument names."""
    with gr.Accordion("Options", open=False):
        return {
            "method": gr.Dropdown(list(METHODS), value="blend", label="Method"),
            "region": gr.Dropdown(list(REGION_CHOICES), value="auto", label="Region"),
            "strength": gr.Textbox(str(DEFAULT_STRENGTH), label="Strength: a number in (0, 1], or auto"),
            "steps": gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="edit-steps"),
            "seed": gr.Textbox("", label=SEED_HELP, elem_id="edit-seed"),
            "guidance_scale": gr.Number(0, label="Guidance scale (0: the model's)"),
            "editor": gr.ImageEditor(
                label="Paint a mask (optional): painted pixels are edited, overriding the automatic mask",
                type="numpy",
                sources=(),
                layers=False,
                transforms=(),
            ),
        }
