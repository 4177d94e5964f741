"""The PNG info tab: a PNG's recipe (retouch's JSON, A1111's ``parameters``), sent on or replayed."""

from __future__ import annotations

from typing import Any

import gradio as gr

from retouch.ui import handlers
from retouch.ui.calls import MODEL_QUEUE, on_model, shown_errors
from retouch.ui.edit_tab import EditTab
from retouch.ui.generate_tab import GenerateTab
from retouch.ui.session import UISession


def build_info_tab(session: UISession, edit: EditTab, generate: GenerateTab, tabs: gr.Tabs) -> None:
    with gr.Tab("PNG info", id="info"):
        with gr.Row():
            with gr.Column():
                png = gr.File(label="Drop a PNG (from retouch or AUTOMATIC1111)", type="filepath", elem_id="info-png")
                with gr.Row():
                    to_generate = gr.Button("Send to Generate", elem_id="info-to-generate")
                    to_edit = gr.Button("Send to Edit", elem_id="info-to-edit")
                    replay = gr.Button("Replay", elem_id="info-replay")
                replayed = gr.Image(label="Replayed", type="filepath", interactive=False)
                verdict = gr.Markdown(elem_id="info-verdict")
            with gr.Column():
                parameters = gr.Textbox(label="parameters (AUTOMATIC1111)", lines=4, elem_id="info-parameters")
                recipe = gr.JSON(label="Recipe", elem_id="info-recipe")

        def show(path: str | None) -> tuple[Any, Any]:
            if not path:
                return "", None
            info = shown_errors(handlers.read_png_info, path)
            return info.parameters, info.recipe

        def send_to_generate(path: str | None) -> list[Any]:
            fields = handlers.generate_fields(shown_errors(handlers.read_png_info, path).recipe)
            values = [gr.update(value=fields[name]) if name in fields else gr.update() for name in generate.fields]
            return [*values, gr.Tabs(selected="generate")]

        def send_to_edit(path: str | None) -> tuple[Any, Any, Any]:
            info = shown_errors(handlers.read_png_info, path)
            return path, info.caption, gr.Tabs(selected="edit")

        def run_replay(path: str | None, request: gr.Request) -> tuple[str, str]:
            picture, text = on_model(session, request, handlers.run_replay, path)
            return str(picture), text

        png.change(show, png, [parameters, recipe])
        to_generate.click(send_to_generate, png, [*generate.fields.values(), tabs])
        to_edit.click(send_to_edit, png, [edit.picture, edit.source, tabs])
        replay.click(run_replay, png, [replayed, verdict], concurrency_id=MODEL_QUEUE, concurrency_limit=1)
