"""PNG files that carry their recipe.

Two tEXt chunks are written:
- ``parameters``: AUTOMATIC1111's format, so A1111, ComfyUI and image viewers show it::

      a large red circle on a blue background
      Negative prompt: blurry
      Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: shapes-64

  An edit adds A1111's img2img field ``Denoising strength`` and its source caption as
  ``Source prompt``. LoRAs appear as A1111 writes them, ``<lora:name:scale>`` after the prompt and
  ``Lora hashes: "name: 0123456789ab"``; embeddings as ``TI hashes: "<star>: 0123456789ab"``.
  Prompts are written on one line (a line break is whitespace to CLIP, so the
  picture does not change), and values holding ``,``, ``:`` or a line break are JSON-quoted as
  A1111 quotes them: no prompt can add a settings line that readers would take for the real one.

- ``retouch``: the full recipe as JSON (no NaN or infinity), which ``retouch replay`` re-runs.
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
# One "Key: value" pair of A1111's last line; a value may be a JSON-quoted string.
_PAIR_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
STRENGTH_KEY = "Denoising strength"  # A1111's img2img noise level
SOURCE_KEY = "Source prompt"  # an edit's caption of its input; A1111's img2img has none


def model_display_name(model: str) -> str:
    """What A1111's ``Model:`` field shows: a bundled name, hub id, or a path's last part."""
    if os.sep in model or model.endswith((".safetensors", ".ckpt", ".bin")):
        return Path(model).stem if Path(model).suffix else Path(model).name
    return model


def one_line(text: str) -> str:
    """``text`` with every line break a space: the tokenizer reads both as whitespace, and a
    prompt's own line break must not start a line that A1111 readers parse as settings."""
    return " ".join(text.splitlines())


def quote(value: Any) -> str:
    """A value as A1111 writes it: JSON-quoted when it holds ``,``, ``:`` or a line break."""
    text = str(value)
    if not any(mark in text for mark in (",", ":", "\n", "\r")) and text == one_line(text):
        return text
    return json.dumps(text, ensure_ascii=False)


def unquote(value: str) -> str:
    """The inverse of ``quote`` (A1111's own reader unquotes the same way)."""
    value = value.strip()
    if value.startswith('"') and value.endswith('"') and len(value) > 1:
        try:
            return str(json.loads(value))
        except json.JSONDecodeError:
            return value.strip('"')
    return value


def format_parameters(recipe: dict[str, Any]) -> str:
    """The A1111 ``parameters`` text for a recipe: a generation's, or an edit's as img2img."""
    lines = [one_line(recipe["prompt"])]
    if recipe.get("negative_prompt"):
        lines.append(NEGATIVE_PREFIX + one_line(recipe["negative_prompt"]))
    fields = {
        "Steps": recipe["steps"],
        "Sampler": a1111_sampler(recipe["scheduler"]),
        "CFG scale": f"{float(recipe['guidance_scale']):g}",
        "Seed": recipe["seed"],
        "Size": f"{recipe['width']}x{recipe['height']}",
        "Model": model_display_name(str(recipe["model"])),
    }
    lines[0] += "".join(f" <lora:{name}:{scale:g}>" for name, scale, _ in _loras(recipe))
    fields.update(adapter_hashes(recipe))
    if recipe.get("task") == "edit":  # an img2img to A1111 readers
        if isinstance(recipe.get("strength"), int | float):
            fields[STRENGTH_KEY] = f"{float(recipe['strength']):g}"
        if recipe.get("source"):
            fields[SOURCE_KEY] = recipe["source"]
    lines.append(", ".join(f"{key}: {quote(value)}" for key, value in fields.items()))
    return "\n".join(lines)


def _loras(recipe: dict[str, Any]) -> list[tuple[str, float, str]]:
    """``(name, scale, short hash)`` of each LoRA the recipe's adapters record."""
    records = recipe.get("adapters") if isinstance(recipe.get("adapters"), list) else []
    return [
        (_alias(record.get("name")), float(record.get("scale", 1.0)), str(record.get("a1111_hash", "")))
        for record in records
        if isinstance(record, dict) and record.get("kind") == "lora"
    ]


def _alias(name: Any) -> str:
    """A name as A1111 writes it in hash lists: without the list's own separators."""
    return str(name).replace(":", "").replace(",", "")


def adapter_hashes(recipe: dict[str, Any]) -> dict[str, str]:
    """A1111's ``Lora hashes`` and ``TI hashes`` fields (``"name: hash, ..."``, 12 hex digits each)
    for the LoRAs and embeddings the recipe's adapters record; none when it records none."""
    records = recipe.get("adapters") if isinstance(recipe.get("adapters"), list) else []
    fields = {}
    loras = [f"{name}: {short}" for name, _, short in _loras(recipe) if short]
    if loras:
        fields["Lora hashes"] = ", ".join(loras)
    embeddings = [
        f"{_alias(token)}: {record['a1111_hash']}"
        for record in records
        if isinstance(record, dict) and record.get("kind") == "embedding" and record.get("a1111_hash")
        for token in record.get("tokens") or []
    ]
    if embeddings:
        fields["TI hashes"] = ", ".join(embeddings)
    return fields


def parse_parameters(text: str) -> dict[str, Any]:
    """Read A1111 ``parameters`` text back into a recipe (unknown keys are dropped): a generate
    recipe, or an edit's when it has a ``Denoising strength`` and no hires-fix fields."""
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
    values = {key.strip(): unquote(value) for key, value in pairs.items()}
    try:
        recipe.update(_settings(values))
    except ValueError as e:
        raise RetouchError(f"unreadable A1111 parameters ({e}); the settings line is {last!r}") from e
    if STRENGTH_KEY in values and not any(key.startswith("Hires") for key in values):
        recipe.update(task="edit", target=recipe["prompt"], strength=float(values[STRENGTH_KEY]))
        if SOURCE_KEY in values:
            recipe["source"] = values[SOURCE_KEY]
    return recipe


def _settings(values: dict[str, str]) -> dict[str, Any]:
    recipe: dict[str, Any] = {}
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
    try:
        text = json.dumps(recipe, sort_keys=True, allow_nan=False)
    except ValueError as e:  # NaN or infinity: not JSON, and not a picture anyone asked for
        raise RetouchError(f"the recipe holds a number that is not finite, which JSON cannot carry: {e}") from e
    info.add_text(RECIPE_KEY, text)
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
