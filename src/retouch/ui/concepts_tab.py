"""The Concepts tab: upload 3-20 pictures, pick a method, train with a live progress bar and loss
curve; the concept then appears in the Edit and Generate tabs' concept lists."""

from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from retouch.train.personalize import METHODS
from retouch.ui.calls import MODEL_QUEUE, cancel_button, client_id, on_model
from retouch.ui.concept_handlers import DEFAULT_CONCEPT_STEPS, loss_rows, train_from_uploads
from retouch.ui.session import UISession

LOSS_EVERY_S = 1.0  # how often the loss curve is redrawn while a concept trains


def build_concepts_tab(session: UISession, pickers: list[gr.Dropdown]) -> None:
    """The tab; ``pickers`` (the other tabs' concept lists) gain each concept trained here."""
    with gr.Tab("Concepts", id="concepts"):
        gr.Markdown(
            "Teach the model a new concept from 3-20 pictures of it, under a new token such as `<star>`; "
            "then pick it in Edit or Generate and use the token in a caption "
            "(`a large red <star> on a blue background`). The model the other tabs use is not changed: "
            "a copy learns the concept. Training takes the model while it runs."
        )
        with gr.Row():
            with gr.Column():
                files = gr.File(
                    label="Pictures of the concept (3-20)",
                    file_count="multiple",
                    type="filepath",
                    elem_id="concept-files",
                )
                fields = {
                    "token": gr.Textbox("<star>", label="Token (a new word, e.g. <star>)", elem_id="concept-token"),
                    "method": gr.Dropdown(list(METHODS), value="textual-inversion", label="Method"),
                    "class_word": gr.Textbox("", label="Class word (DreamBooth, Custom Diffusion), e.g. cross"),
                    "init_word": gr.Textbox("", label="Initial word (Textual Inversion), e.g. cross"),
                    "steps": gr.Slider(
                        1, 2000, value=DEFAULT_CONCEPT_STEPS, step=1, label="Steps", elem_id="concept-steps"
                    ),
                    "seed": gr.Number(0, precision=0, label="Seed"),
                }
                with gr.Row():
                    train = gr.Button("Train", variant="primary", elem_id="concept-train")
                    cancel = gr.Button("Cancel")
            with gr.Column():
                curve = gr.LinePlot(x="step", y="loss", label="Loss", elem_id="concept-loss")
                status = gr.Markdown(elem_id="concept-status")
                listing = gr.Markdown(concept_list(session), elem_id="concept-list")
        timer = gr.Timer(LOSS_EVERY_S, active=False)

        def train_click(
            files: list[str] | None,
            token: str,
            method: str,
            class_word: str,
            init_word: str,
            steps: int,
            seed: float,
            request: gr.Request,
            progress: gr.Progress = gr.Progress(track_tqdm=True),  # noqa: B008 (gradio's way to ask for progress)
        ) -> list[Any]:
            settings = {"method": method, "class_word": class_word, "init_word": init_word}
            settings.update(steps=int(steps), seed=int(seed or 0))
            name = on_model(session, request, train_from_uploads, client_id(request), files, token, **settings)
            choices = gr.Dropdown(choices=list(session.concepts))
            done = f"Trained **{name}**: pick it in Edit or Generate and write `{token.strip()}` in a caption."
            return [done, concept_list(session), *[choices] * len(pickers)]

        def curve_now(request: gr.Request) -> pd.DataFrame:
            return pd.DataFrame(loss_rows(session, client_id(request)), columns=["step", "loss"])

        event = train.click(lambda: gr.Timer(active=True), None, timer, queue=False).then(
            train_click,
            [files, *fields.values()],
            [status, listing, *pickers],
            concurrency_id=MODEL_QUEUE,
            concurrency_limit=1,
            show_progress_on=status,
        )
        event.then(lambda: gr.Timer(active=False), None, timer, queue=False).then(curve_now, None, curve)
        timer.tick(curve_now, None, curve, show_progress="hidden")
        cancel_button(session, cancel, event)


def concept_list(session: UISession) -> str:
    """The concepts this server offers, one line each."""
    if not session.concepts:
        return "No concept yet."
    return "Concepts: " + ", ".join(f"`{name}`" for name in session.concepts)
