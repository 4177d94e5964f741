"""The Steer tab (interpolation between two prompts; a style turned up in a sweep) and the Imagic tab."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from retouch.core.schedulers import DEFAULT_STEPS
from retouch.ui import handlers
from retouch.ui.calls import MODEL_QUEUE, cancel_button, on_model
from retouch.ui.edit_tab import SEED_HELP
from retouch.ui.session import UISession

PROGRESS = gr.Progress(track_tqdm=True)  # a default argument asks gradio for a progress bar


def build_steer_tab(session: UISession) -> None:
    with gr.Tab("Steer", id="steer"):
        with gr.Row():
            with gr.Column():
                gr.Markdown("### Interpolate between two prompts")
                prompt_a = gr.Textbox(label="Prompt A", elem_id="steer-prompt-a")
                prompt_b = gr.Textbox(label="Prompt B", elem_id="steer-prompt-b")
                frames = gr.Slider(2, 16, value=9, step=1, label="Frames")
                seed = gr.Textbox("", label=SEED_HELP)
                steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps")
                with gr.Row():
                    run = gr.Button("Interpolate", variant="primary", elem_id="steer-run")
                    cancel = gr.Button("Cancel")
                strip = gr.Image(label="Strip", type="filepath", interactive=False, elem_id="steer-strip")
                animation = gr.Image(label="Animation", type="filepath", interactive=False, format="gif")
            with gr.Column():
                gr.Markdown("### Turn a style up or down")
                prompt = gr.Textbox(label="Prompt", elem_id="style-prompt")
                style = gr.Textbox(label="Style phrase (e.g. pastel)", elem_id="style-phrase")
                amount = gr.Slider(-1, 2, value=1, step=0.05, label="Style amount (the sweep goes from 0 to it)")
                points = gr.Slider(2, 9, value=5, step=1, label="Pictures in the sweep")
                style_seed = gr.Textbox("", label=SEED_HELP)
                style_steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps")
                with gr.Row():
                    sweep = gr.Button("Sweep", variant="primary", elem_id="style-run")
                    style_cancel = gr.Button("Cancel")
                sweep_strip = gr.Image(label="Sweep", type="filepath", interactive=False, elem_id="style-strip")

        def run_interpolate(
            a: str, b: str, frames: int, seed: str, steps: int, request: gr.Request, progress: gr.Progress = PROGRESS
        ) -> tuple[str, str]:
            settings = {"frames": frames, "seed": seed, "steps": steps}
            view = on_model(session, request, handlers.run_interpolate, a, b, **settings)
            return str(view.strip), str(view.animation)

        def run_sweep(
            prompt: str,
            style: str,
            amount: float,
            points: int,
            seed: str,
            steps: int,
            request: gr.Request,
            progress: gr.Progress = PROGRESS,
        ) -> str:
            settings = {"amount": amount, "points": points, "seed": seed, "steps": steps}
            sheet, _ = on_model(session, request, handlers.run_style_sweep, prompt, style, **settings)
            return str(sheet)

        queue = {"concurrency_id": MODEL_QUEUE, "concurrency_limit": 1}
        event = run.click(run_interpolate, [prompt_a, prompt_b, frames, seed, steps], [strip, animation], **queue)
        cancel_button(session, cancel, event)
        event = sweep.click(run_sweep, [prompt, style, amount, points, style_seed, style_steps], sweep_strip, **queue)
        cancel_button(session, style_cancel, event)


def build_imagic_tab(session: UISession) -> None:
    with gr.Tab("Imagic", id="imagic"):
        with gr.Row():
            with gr.Column():
                picture = gr.File(label="Picture", type="filepath")
                target = gr.Textbox(label="Target caption: what you want")
                source = gr.Textbox(label="Source caption (optional; helps the judge and the region)")
                eta = gr.Textbox("0.7", label="eta: a number in [0, 2], or auto (sweep and judge)")
                seed = gr.Textbox("", label=SEED_HELP)
                seeds = gr.Slider(1, 4, value=1, step=1, label="Seeds per eta (auto)")
                steps = gr.Slider(1, 100, value=DEFAULT_STEPS, step=1, label="Steps")
                with gr.Accordion("Stages A and B", open=False):
                    embed_steps = gr.Number(None, precision=0, label="Embedding steps (empty: sized to the model)")
                    tune_steps = gr.Number(None, precision=0, label="Tuning steps (empty: sized to the model)")
                with gr.Row():
                    run = gr.Button("Run", variant="primary")
                    cancel = gr.Button("Cancel")
            with gr.Column():
                chosen = gr.Image(label="Chosen output", type="filepath", interactive=False)
                summary = gr.Markdown()
                sweep = gr.Gallery(label="eta sweep", type="pil")
                plot = gr.ScatterPlot(x="eta", y="judge_score", color="accepted", label="Judge score by eta")

        def run_imagic(
            picture: str | None,
            target: str,
            source: str,
            eta: str,
            seed: str,
            seeds: int,
            steps: int,
            embed_steps: float | None,
            tune_steps: float | None,
            request: gr.Request,
            progress: gr.Progress = PROGRESS,
        ) -> tuple[str, str, list, pd.DataFrame]:
            settings = {"source": source, "eta": eta, "seed": seed, "seeds": seeds, "steps": steps}
            settings.update(embed_steps=embed_steps, tune_steps=tune_steps)
            view = on_model(session, request, handlers.run_imagic, picture, target, **settings)
            rows = [row for row in view.scores if row.get("judge_score") is not None]
            table = pd.DataFrame(rows, columns=["eta", "judge_score", "accepted"]).astype({"accepted": str})
            return str(view.image), view.summary, view.sweep, table

        inputs = [picture, target, source, eta, seed, seeds, steps, embed_steps, tune_steps]
        event = run.click(
            run_imagic, inputs, [chosen, summary, sweep, plot], concurrency_id=MODEL_QUEUE, concurrency_limit=1
        )
        cancel_button(session, cancel, event)
