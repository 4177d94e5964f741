"""Editing methods: automatic region edits from two captions (``edit``), SDEdit, inpainting with a
given mask, DiffEdit, and the masks, region decision and strength search they share.

    from retouch.edit import edit

    result = edit(model, "in.png", "a large red circle on a blue background",
                  "a large red circle on a green background", seed=1)
    result.image.save("out.png")
"""

from retouch.edit.api import DEFAULT_STEPS, DEFAULT_STRENGTH, METHODS, EditResult, edit
from retouch.edit.masks import MaskConfig

__all__ = ["DEFAULT_STEPS", "DEFAULT_STRENGTH", "METHODS", "EditResult", "MaskConfig", "edit"]
