"""The Instruct tab: a picture and an instruction ("make the background green"), through the
server's instruct model, with the two guidances and the Preserve toggle."""

from __future__ import annotations

from typing import Any

import gradio as gr

from retouch.ui.calls import MODEL_QUEUE, cancel_button, on_model
from retouch.ui.edit_tab import SEED_HELP, picture_preview
from retouch.ui.instruct_handlers import run_instruct
from retouch.ui.session import UISession


def build_instruct_tab(session: UISession) -> None:
    with gr.Tab("Instruct", id="instruct"):
        gr.Markdown(
            f"Say what to change, as an instruction. Model: `{session.instruct_model}` (loaded on the first "
            "run). With **Preserve**, only the pixels the instruction changed are taken; every other pixel "
            "stays the input's."
        )
        with gr.Row():
            with gr.Column():
                picture = gr.File(label="Picture (PNG, JPEG or WebP)", type="filepath", elem_id="instruct-picture")
                preview = gr.Image(label="Input", type="filepath", interactive=False, height=256)
                instruction = gr.Textbox(
                    label="Instruction", placeholder="make the background green", elem_id="instruct-instruction"
                )
                fields = {
                    "image_guidance_scale": gr.Slider(1.0, 3.0, value=1.5, step=0.1, label="Image guidance"),
                    "guidance_scale": gr.Number(0, label="Text guidance (0: the model's)"),
                    "steps": gr.Slider(0, 100, value=0, step=1, label="Steps (0: the model's)"),
                    "seed": gr.Textbox("", label=SEED_HELP, elem_id="instruct-seed"),
                    "preserve": gr.Checkbox(True, label="Preserve: keep every pixel the instruction did not change"),
                }
                with gr.Row():
                    run = gr.Button("Run", variant="primary", elem_id="instruct-run")
                    cancel = gr.Button("Cancel")
            with gr.Column():
                shown = [
                    gr.Image(label="Result", type="filepath", interactive=False, height=256, elem_id="instruct-result"),
                    gr.Markdown(elem_id="instruct-summary"),
                    gr.Image(label="Changed region over the input", type="pil", interactive=False, height=256),
                    gr.File(label="Downloads: PNG, mask, RGBA layer, JSON report", file_count="multiple"),
                    gr.JSON(label="Report"),
                ]

        def instruct_click(
            picture: str | None,
            instruction: str,
            image_guidance_scale: float,
            guidance_scale: float | None,
            steps: int,
            seed: str,
            preserve: bool,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way to ask for progress)
        ) -> list[Any]:
            settings = {"image_guidance_scale": image_guidance_scale, "guidance_scale": guidance_scale}
            settings.update(steps=steps, seed=seed, preserve=preserve)
            view = on_model(session, request, run_instruct, picture, instruction, **settings)
            return [view.image, view.summary, view.overlay, [str(path) for path in view.files], view.report]

        picture.change(picture_preview, picture, preview)
        event = run.click(
            instruct_click,
            [picture, instruction, *fields.values()],
            shown,
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=1,
            show_progress_on=shown[1],
        )
        cancel_button(session, cancel, event)
