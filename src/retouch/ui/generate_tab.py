"""The Generate tab: prompt to pictures, a gallery, and "send to Edit"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from retouch.core.generate import DEFAULT_SCHEDULER
from retouch.core.schedulers import DEFAULT_STEPS, SCHEDULER_NAMES
from retouch.core.seeding import random_seed
from retouch.ui import handlers
from retouch.ui.calls import MODEL_QUEUE, cancel_button, on_model
from retouch.ui.edit_tab import SEED_HELP, EditTab, concept_picker
from retouch.ui.session import UISession


@dataclass
class GenerateTab:
    """The Generate tab's boxes, keyed by ``run_generate``'s argument names ("send to Generate")."""

    fields: dict[str, gr.components.Component]


def build_generate_tab(session: UISession, edit: EditTab, tabs: gr.Tabs) -> GenerateTab:
    with gr.Tab("Generate", id="generate"):
        with gr.Row():
            with gr.Column():
                fields = {
                    "prompt": gr.Textbox(label="Prompt", elem_id="generate-prompt"),
                    "negative_prompt": gr.Textbox(label="Negative prompt"),
                }
                with gr.Row():
                    fields["seed"] = gr.Textbox("", label=SEED_HELP, elem_id="generate-seed", scale=4)
                    dice = gr.Button("🎲", scale=1, elem_id="generate-dice")
                fields["steps"] = gr.Slider(
                    1, 100, value=DEFAULT_STEPS, step=1, label="Steps", elem_id="generate-steps"
                )
                fields["scheduler"] = gr.Dropdown(list(SCHEDULER_NAMES), value=DEFAULT_SCHEDULER, label="Scheduler")
                fields["guidance_scale"] = gr.Number(0, label="Guidance scale (0: the model's)")
                with gr.Row():
                    fields["width"] = gr.Number(0, precision=0, label="Width (0: the model's)")
                    fields["height"] = gr.Number(0, precision=0, label="Height (0: the model's)")
                fields["num_images"] = gr.Slider(1, 8, value=1, step=1, label="Number of images")
                fields["concepts"] = concept_picker(session)
                with gr.Row():
                    run = gr.Button("Generate", variant="primary", elem_id="generate-run")
                    cancel = gr.Button("Cancel")
            with gr.Column():
                gallery = gr.Gallery(label="Pictures", elem_id="generate-gallery", type="filepath")
                send = gr.Button("Send to Edit", elem_id="generate-send")
        selected = gr.State(0)
        saved = gr.State([])  # the saved PNGs (with their recipes): the gallery shows copies

        def run_generate(
            prompt: str,
            negative_prompt: str,
            seed: str,
            steps: int,
            scheduler: str,
            guidance_scale: float | None,
            width: float | None,
            height: float | None,
            num_images: int,
            concepts: list[str] | None,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way to ask for progress)
        ) -> tuple[list[tuple[str, str]], list[str]]:
            settings = {"seed": seed, "steps": steps, "scheduler": scheduler, "guidance_scale": guidance_scale}
            settings.update(width=width, height=height, num_images=num_images, concepts=concepts)
            pictures = on_model(session, request, handlers.run_generate, prompt, negative_prompt, **settings)
            return [(str(path), caption) for path, caption in pictures], [str(path) for path, _ in pictures]

        def send_to_edit(pictures: list[str], index: int, prompt: str) -> tuple[Any, Any, Any]:
            if not pictures:
                raise gr.Error("Generate a picture first.", print_exception=False)
            picture = pictures[min(index, len(pictures) - 1)]
            return picture, prompt, gr.Tabs(selected="edit")

        def select(event: gr.SelectData) -> int:
            return event.index

        dice.click(lambda: str(random_seed() % (2**31)), None, fields["seed"], queue=False)
        event = run.click(
            run_generate, list(fields.values()), [gallery, saved], concurrency_id=MODEL_QUEUE, concurrency_limit=1
        )
        cancel_button(session, cancel, event)
        gallery.select(select, None, selected)
        send.click(send_to_edit, [saved, selected, fields["prompt"]], [edit.picture, edit.source, tabs])
    return GenerateTab(fields=fields)
