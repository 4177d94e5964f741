"""Judges for ``strength="auto"``: did the edit take?

- ``oracle``: on shapes-64 with canonical captions, the world's oracle reads the output back and
  the edit took when every field matches the target caption's scene.
- a CLIP model folder: the edit took when the picture is closer to the target caption than to the
  source caption (CLIP similarity difference > 0, as in directional CLIP scores).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from retouch.edit.strength import Judge
from retouch.errors import RetouchError
from retouch.worlds.shapes64 import CANVAS, parse_caption, read_scene


def oracle_judge(target_prompt: str) -> Judge:
    """Score: the fraction of the target scene's fields the oracle reads back; took: all of them."""
    target = parse_caption(target_prompt)
    if target is None:
        raise RetouchError(
            f"--judge oracle needs a canonical shapes-64 target caption, got {target_prompt!r}; "
            "pass --judge PATH to a CLIP model folder instead"
        )

    def judge(image: Image.Image) -> tuple[float, bool]:
        if image.size != (CANVAS, CANVAS):
            raise RetouchError(f"--judge oracle reads {CANVAS}x{CANVAS} pictures, got {image.size}")
        fields = read_scene(np.asarray(image.convert("RGB"))).fields()
        hits = [fields[name] == value for name, value in target.items()]
        return sum(hits) / len(hits), all(hits)

    return judge


def clip_judge(
    path: str | os.PathLike[str], source_prompt: str, target_prompt: str, device: str | torch.device = "cpu"
) -> Judge:
    """CLIP from a local folder (transformers ``CLIPModel`` + ``CLIPProcessor``); score: cosine
    similarity to the target caption minus that to the source caption."""
    from transformers import CLIPModel, CLIPProcessor

    path = Path(path).expanduser()
    try:
        model = CLIPModel.from_pretrained(path, local_files_only=True).to(device).eval()
        processor = CLIPProcessor.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise RetouchError(
            f"cannot load the CLIP judge from {path} ({e}); pass a local folder written by "
            "CLIPModel.save_pretrained and CLIPProcessor.save_pretrained, or --judge oracle"
        ) from e
    with torch.no_grad():
        tokens = processor(text=[source_prompt, target_prompt], return_tensors="pt", padding=True).to(device)
        text = torch.nn.functional.normalize(_features(model.get_text_features(**tokens)), dim=-1)  # (2, D)

    @torch.no_grad()
    def judge(image: Image.Image) -> tuple[float, bool]:
        pixels = processor(images=image.convert("RGB"), return_tensors="pt").to(device)
        picture = torch.nn.functional.normalize(_features(model.get_image_features(**pixels)), dim=-1)
        source_sim, target_sim = (picture @ text.T)[0].tolist()
        score = target_sim - source_sim
        return score, score > 0

    return judge


def _features(output: torch.Tensor | object) -> torch.Tensor:
    """``get_*_features`` return a tensor, or in newer transformers an output with ``pooler_output``."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def make_judge(
    spec: str | os.PathLike[str] | Judge | None,
    source_prompt: str,
    target_prompt: str,
    device: str | torch.device = "cpu",
) -> Judge:
    """``None`` means the oracle when both captions are canonical shapes-64 captions."""
    if callable(spec):
        return spec
    if spec is None:
        if parse_caption(source_prompt) and parse_caption(target_prompt):
            return oracle_judge(target_prompt)
        raise RetouchError(
            "--strength auto needs a judge: pass --judge PATH to a local CLIP model folder "
            "(the oracle judges only canonical shapes-64 captions)"
        )
    if str(spec) == "oracle":
        return oracle_judge(target_prompt)
    return clip_judge(spec, source_prompt, target_prompt, device)
