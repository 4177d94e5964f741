"""``build_app``: the gradio Blocks app, one tab per job, Edit first."""

from __future__ import annotations

import gradio as gr

from retouch.ui.concepts_tab import build_concepts_tab
from retouch.ui.edit_tab import build_edit_tab
from retouch.ui.generate_tab import build_generate_tab
from retouch.ui.info_tab import build_info_tab
from retouch.ui.instruct_tab import build_instruct_tab
from retouch.ui.session import UISession
from retouch.ui.steer_tab import build_imagic_tab, build_steer_tab


def build_app(session: UISession) -> gr.Blocks:
    """The UI over ``session``'s model; every picture made is saved under ``session.outputs``."""
    with gr.Blocks(title="retouch", analytics_enabled=False) as app:
        gr.Markdown(f"# retouch\nModel: `{session.model_label}`. Every output is also saved on the server.")
        with gr.Tabs() as tabs:
            edit = build_edit_tab(session)
            generate = build_generate_tab(session, edit, tabs)
            build_instruct_tab(session)
            build_steer_tab(session)
            build_imagic_tab(session)
            build_concepts_tab(session, [edit.concepts, generate.fields["concepts"]])
            build_info_tab(session, edit, generate, tabs)
    return app
