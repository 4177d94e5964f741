"""``retouch serve``: a gradio web UI over the Python API.

The UI holds no editing logic: the handlers call the same functions the CLI calls (``edit``,
``generate``, ``instruct``, ``interpolate``, ``style_sweep``, ``imagic``, ``personalize``,
``read_recipe``, ``replay``) and return what the components show; ``app`` lays the components out and wires them to the
handlers; ``server`` launches it with its limits (local by default, no share link, uploads
capped, only the outputs folder readable). gradio is imported only here.
"""

from __future__ import annotations

from retouch.ui import edit_handlers, handlers
from retouch.ui.server import ServeOptions, launch_options, serve
from retouch.ui.session import UISession

__all__ = ["ServeOptions", "edit_handlers", "handlers", "UISession", "launch_options", "serve"]
