"""PNG files that carry their recipe.

Two tEXt chunks are written:
- ``parameters``: AUTOMATIC1111's format, so A1111, ComfyUI and image viewers show it::

      a large red circle on a blue background
      Negative prompt: blurry
      Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: shapes-64

- ``retouch``: the full recipe as JSON, which ``retouch replay`` re-runs.
"""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retouch.errors import RetouchError
from retouch.io.a1111 import a1111_sampler, scheduler_from_a1111_name
from retouch.io.atomic import atomic_write_bytes
from retouch.io.images import load_image

PARAMETERS_KEY = "parameters"
RECIPE_KEY = "retouch"
NEGATIVE_PREFIX = "Negative prompt: "
# One "Key: value" pair of A1111's last line; a value may be a quoted string.
_PAIR_RE = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def model_display_name(model: str) -> str:
    """What A1111's ``Model:`` field shows: a bundled name, hub id, or a path's last part."""
    if os.sep in model or model.endswith((".safetensors", ".ckpt", ".bin")):
        return Path(model).stem if Path(model).suffix else Path(model).name
    return model


def format_parameters(recipe: dict[str, Any]) -> str:
    """The A1111 ``parameters`` text for a generate recipe."""
    lines = [recipe["prompt"]]
    if recipe.get("negative_prompt"):
        lines.append(NEGATIVE_PREFIX + recipe["negative_prompt"])
    fields = {
        "Steps": recipe["steps"],
        "Sampler": a1111_sampler(recipe["scheduler"]),
        "CFG scale": f"{float(recipe['guidance_scale']):g}",
        "Seed": recipe["seed"],
        "Size": f"{recipe['width']}x{recipe['height']}",
        "Model": model_display_name(str(recipe["model"])),
    }
    lines.append(", ".join(f"{key}: {value}" for key, value in fields.items()))
    return "\n".join(lines)


def parse_parameters(text: str) -> dict[str, Any]:
    """Read A1111 ``parameters`` text back into a generate recipe (unknown keys are dropped)."""
    *prompt_lines, last = text.strip().split("\n")
    pairs = dict(_PAIR_RE.findall(last))
    if "Steps" not in pairs:  # no settings line: the whole text is the prompt
        prompt_lines, pairs = [*prompt_lines, last], {}
    prompt, negative, in_negative = [], [], False
    for line in prompt_lines:
        if line.startswith(NEGATIVE_PREFIX):
            in_negative, line = True, line[len(NEGATIVE_PREFIX) :]
        (negative if in_negative else prompt).append(line)
    recipe: dict[str, Any] = {"task": "generate", "prompt": "\n".join(prompt)}
    if negative:
        recipe["negative_prompt"] = "\n".join(negative)
    values = {key.strip(): value.strip().strip('"') for key, value in pairs.items()}
    if "Steps" in values:
        recipe["steps"] = int(values["Steps"])
    if "Sampler" in values:
        recipe["scheduler"] = scheduler_from_a1111_name(values["Sampler"])
    if "CFG scale" in values:
        recipe["guidance_scale"] = float(values["CFG scale"])
    if "Seed" in values:
        recipe["seed"] = int(values["Seed"])
    if "Size" in values:
        width, height = values["Size"].split("x")
        recipe["width"], recipe["height"] = int(width), int(height)
    if "Model" in values:
        recipe["model"] = values["Model"]
    return recipe


def encode_png(image: Image.Image, recipe: dict[str, Any]) -> bytes:
    info = PngInfo()
    info.add_text(PARAMETERS_KEY, format_parameters(recipe))
    info.add_text(RECIPE_KEY, json.dumps(recipe, sort_keys=True))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def save_png(image: Image.Image, path: str | os.PathLike[str], recipe: dict[str, Any]) -> Path:
    """Write ``image`` with its recipe to ``path`` atomically."""
    return atomic_write_bytes(path, encode_png(image, recipe))


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The recipe stored in a PNG: retouch's JSON, else A1111 ``parameters`` text."""
    load_image(path)  # clear errors for missing, empty or corrupt files
    with Image.open(path) as image:
        text = dict(getattr(image, "text", {}) or image.info)
    if RECIPE_KEY in text:
        try:
            recipe = json.loads(text[RECIPE_KEY])
        except json.JSONDecodeError as e:
            raise RetouchError(f"{path}: the {RECIPE_KEY!r} chunk is not valid JSON ({e})") from e
        if not isinstance(recipe, dict):
            raise RetouchError(f"{path}: the {RECIPE_KEY!r} chunk is not a JSON object")
        return recipe
    if PARAMETERS_KEY in text:
        return parse_parameters(text[PARAMETERS_KEY])
    raise RetouchError(f"{path} carries no recipe (no {RECIPE_KEY!r} or {PARAMETERS_KEY!r} text chunk)")
