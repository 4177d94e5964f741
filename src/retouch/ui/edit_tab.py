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
BRUSH_FRACTION = 16  # the mask brush's radius: this fraction of the picture's shorter side
MASK_COLOUR = "#ff0040"  # the painted strokes, as the mask overlay is tinted
JS_SAFE_SEED = 2**31 - 1  # the dice's range: any seed works, this one reads well


@dataclass
class EditTab:
    """The Edit tab's inputs other tabs fill in ("send to Edit")."""

    picture: gr.File
    source: gr.Textbox
    concepts: gr.Dropdown  # the concepts to load for a run


def picture_changed(path: str | None, painting: bool) -> tuple[Any, Any, Any]:
    """A new picture: its preview, the source caption from its recipe (when it has one), the mask
    editor's background when the painting panel is open (else nothing: the editor draws in
    WebGL, which costs a browser that draws in software a second per picture, so it loads only
    when opened); a file that is not a picture is refused here, with the message."""
    if not picture_preview(path):
        return None, gr.update(), None
    caption = edit_handlers.caption_from_recipe(path)
    return path, (caption or gr.update()), editor_value(path if painting else None)


def picture_preview(path: str | None) -> str | None:
    """A new picture's preview; a file that is not a picture is refused here, with the message."""
    if path:
        shown_errors(read_input_image, path)
    return path or None


def editor_value(path: str | None) -> Any:
    """The mask editor showing ``path`` with no strokes and a brush sized to it (radius 1/16 of
    the shorter side: gradio's own default, drawn in screen pixels, can cover a 64x64 picture)."""
    if not path:
        return None
    size = min(read_input_image(path).image.size)
    value = {"background": path, "layers": [], "composite": None}
    return gr.update(value=value, brush=gr.Brush(default_size=max(1, size // BRUSH_FRACTION), colors=[MASK_COLOUR]))


def open_painting(path: str | None) -> tuple[bool, dict[str, Any] | None]:
    """The painting panel opened: the editor loads the picture, with no strokes yet."""
    return True, editor_value(path)


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
                options["concepts"] = concept_picker(session)
                with gr.Accordion("Paint a mask (optional)", open=False) as painting_panel:
                    editor = gr.ImageEditor(
                        label="Painted pixels are edited, overriding the automatic mask",
                        type="numpy",
                        sources=(),
                        layers=False,
                        transforms=(),
                        elem_id="edit-editor",
                    )
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="edit-run")
                    cancel = gr.Button("Cancel", elem_id="edit-cancel")
            with gr.Column():
                shown = [
                    gr.Image(label="Result", type="filepath", interactive=False, elem_id="edit-result", height=256),
                    gr.Markdown(elem_id="edit-region"),
                    gr.ImageSlider(label="Before / after", type="pil"),
                    gr.Image(label="Mask over the input", type="pil", interactive=False, height=256),
                    gr.File(
                        label="Downloads: PNG, mask, RGBA layer, JSON report",
                        file_count="multiple",
                        elem_id="edit-files",
                    ),
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
            concepts: list[str] | None,
            editor: dict | None,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way to ask for progress)
        ) -> list[Any]:
            settings = {"method": method, "region": region, "strength": strength, "steps": steps, "seed": seed}
            settings.update(guidance_scale=guidance_scale, editor=editor, concepts=concepts)
            view = on_model(session, request, edit_handlers.run_edit, picture, source, target, **settings)
            files = [str(path) for path in view.files]
            return [view.image, view.region, view.before_after, view.overlay, files, view.report]

        painting = gr.State(False)  # whether the painting panel is open
        picture.change(picture_changed, [picture, painting], [preview, source, editor])
        painting_panel.expand(open_painting, picture, [painting, editor])
        painting_panel.collapse(lambda: False, None, painting)
        event = run.click(
            run_edit,
            [picture, source, target, *options.values(), editor],
            shown,
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=1,
            show_progress_on=shown[1],  # one progress bar, beside the region line it is replaced by
        )
        cancel_button(session, cancel, event)
    return EditTab(picture=picture, source=source, concepts=options["concepts"])


def concept_picker(session: UISession) -> gr.Dropdown:
    """The concepts to load for a run (trained in the Concepts tab or given to ``retouch serve``)."""
    return gr.Dropdown(
        list(session.concepts), value=[], multiselect=True, label="Concepts (then use their tokens in captions)"
    )


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
        }
