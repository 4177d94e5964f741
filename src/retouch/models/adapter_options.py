"""What to load: ``--concept`` folders, ``--embedding FILE[:TOKEN]``, ``--lora FILE[:SCALE]`` and
AUTOMATIC1111's ``<lora:name:weight>`` prompt tags, turned into load steps for ``apply_adapters``.

A step is a record without its sha256: ``{"kind", "path", ...}`` with ``tokens`` for an embedding,
``name`` and ``scale`` for a LoRA, and ``concept`` (the folder) for what a concept folder holds.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from retouch.errors import RetouchError
from retouch.models.adapter_files import APPLIED_ROLES, SAFETENSORS_SUFFIX, read_concept

LORA_SUFFIXES: tuple[str, ...] = (SAFETENSORS_SUFFIX, ".pt", ".bin", ".ckpt")
# <lora:name> or <lora:name:weight>, AUTOMATIC1111's extra-network syntax
LORA_TAG_RE = re.compile(r"<lora:(?P<name>[^:<>]+)(?::(?P<weight>[^:<>]*))?(?P<rest>:[^<>]*)?>")


def plan_adapters(
    concepts: Iterable[str | os.PathLike[str]] = (),
    embeddings: Iterable[str] = (),
    loras: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The load steps (records without hashes) for concept folders and ``FILE[:TOKEN]`` /
    ``FILE[:SCALE]`` options; reads only ``concept.json`` files."""
    steps: list[dict[str, Any]] = []
    for folder in concepts:
        steps += concept_steps(folder)
    for option in embeddings:
        path, token = split_embedding_option(option)
        steps.append({"kind": "embedding", "path": path, **({"tokens": [token]} if token else {})})
    for option in loras:
        path, scale = split_lora_option(option)
        steps.append({"kind": "lora", "path": path, "name": Path(path).stem, "scale": scale})
    return steps


def concept_steps(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """What using a concept folder means: its model, embeddings, Custom Diffusion weights and LoRA."""
    folder = Path(folder).expanduser().resolve()
    files = read_concept(folder)["files"]
    kinds = {"model": "model", "embeddings": "embedding", "custom_diffusion": "custom_diffusion", "lora": "lora"}
    steps = []
    for role in APPLIED_ROLES:
        if role in files:
            step = {"kind": kinds[role], "path": str(folder / files[role]), "concept": str(folder)}
            steps.append(step | ({"name": folder.name, "scale": 1.0} if role == "lora" else {}))
    return steps


def split_embedding_option(option: str) -> tuple[str, str | None]:
    """``"FILE:TOKEN"`` -> ``(FILE, TOKEN)``; ``"FILE"`` -> ``(FILE, None)``."""
    head, sep, tail = option.rpartition(":")
    if not sep or Path(option).expanduser().exists() or not head or "/" in tail or os.sep in tail:
        return option, None
    if not tail.strip():
        raise RetouchError(f"--embedding {option!r}: the token after ':' is empty")
    return head, tail.strip()


def split_lora_option(option: str) -> tuple[str, float]:
    """``"FILE:SCALE"`` -> ``(FILE, SCALE)``; ``"FILE"`` -> ``(FILE, 1.0)``."""
    head, sep, tail = option.rpartition(":")
    if not sep or Path(option).expanduser().exists() or not head:
        return option, 1.0
    try:
        scale = float(tail)
    except ValueError:
        raise RetouchError(f"--lora {option!r}: the scale after ':' must be a number, got {tail!r}") from None
    return head, check_scale(scale, option)


def check_scale(scale: float, what: str) -> float:
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
        raise RetouchError(f"{what}: a LoRA scale must be a finite number, got {scale!r}")
    return float(scale)


def take_lora_tags(prompt: str, lora_dir: str | os.PathLike[str] | None) -> tuple[str, list[str]]:
    """``prompt`` without AUTOMATIC1111's ``<lora:name:weight>`` tags, and each tag as a ``--lora``
    option ``FILE:WEIGHT`` with ``name`` found in ``lora_dir`` (``name.safetensors``, ``.pt``, ...).

    >>> take_lora_tags("a (red:1.2) circle", None)
    ('a (red:1.2) circle', [])
    """
    tags = list(LORA_TAG_RE.finditer(prompt))
    if not tags:
        return prompt, []
    if lora_dir is None:
        raise RetouchError(f"the prompt names {tags[0].group(0)}; pass --lora-dir DIR, the folder with the LoRA files")
    options = []
    for tag in tags:
        if tag.group("rest"):
            raise RetouchError(f"{tag.group(0)}: only <lora:name> and <lora:name:weight> are supported")
        weight = tag.group("weight")
        try:
            scale = check_scale(float(weight) if weight not in (None, "") else 1.0, tag.group(0))
        except ValueError:
            raise RetouchError(f"{tag.group(0)}: the weight must be a number, got {weight!r}") from None
        options.append(f"{find_lora(lora_dir, tag.group('name').strip())}:{scale!r}")
    cleaned = LORA_TAG_RE.sub(" ", prompt)
    return " ".join(cleaned.split()), options


def find_lora(lora_dir: str | os.PathLike[str], name: str) -> Path:
    """``lora_dir/name.safetensors`` (or ``.pt``, ``.bin``, ``.ckpt``; sub-folders searched too, as A1111 does)."""
    root = Path(lora_dir).expanduser()
    if not root.is_dir():
        raise RetouchError(f"--lora-dir {root} is not a folder")
    for suffix in LORA_SUFFIXES:
        direct = root / f"{name}{suffix}"
        if direct.is_file():
            return direct.resolve()
    for suffix in LORA_SUFFIXES:
        found = sorted(root.rglob(f"{Path(name).name}{suffix}"))
        if found:
            return found[0].resolve()
    raise RetouchError(f"<lora:{name}>: no {name}.safetensors (or .pt, .bin, .ckpt) in {root}")
