"""Steering in text-embedding space: prompt interpolation, style strength and prompt weighting.

- ``slerp.slerp``: spherical interpolation, vector by vector;
- ``interpolate.interpolate``: frames between two prompts with the seed fixed;
- ``style.stylize`` and ``style.style_embeddings``: a style phrase's strength (theta);
- ``weighting.encode_weighted_prompt``: AUTOMATIC1111's ``(word:1.3)`` prompt weighting.

Modules are imported by name (``from retouch.steer.style import stylize``): ``retouch.core``
imports ``weighting``, so this package imports nothing on its own.
"""
