"""Steering in text-embedding space: prompt interpolation and a style's amount.

- ``slerp.slerp``: spherical interpolation, vector by vector;
- ``interpolate.interpolate``: frames between two prompts with the seed fixed;
- ``style.stylize`` and ``style.style_embeddings``: a style phrase's amount (theta);
- ``share``: prompt-to-prompt's shared cross-attention maps; ``pairs``: picture pairs drawn with
  them and filtered by CLIP, the InstructPix2Pix paper's training data (``train instruct --data generated``);
- AUTOMATIC1111's ``(word:1.3)`` prompt weighting is shared by every method: ``retouch.core.weighting``.

Modules are imported by name (``from retouch.steer.style import stylize``), so importing this
package loads nothing on its own.
"""
