"""Steering in text-embedding space: prompt interpolation and a style's amount.

- ``slerp.slerp``: spherical interpolation, vector by vector;
- ``interpolate.interpolate``: frames between two prompts with the seed fixed;
- ``style.stylize`` and ``style.style_embeddings``: a style phrase's amount (theta);
- AUTOMATIC1111's ``(word:1.3)`` prompt weighting is shared by every method: ``retouch.core.weighting``.

Modules are imported by name (``from retouch.steer.style import stylize``), so importing this
package loads nothing on its own.
"""
