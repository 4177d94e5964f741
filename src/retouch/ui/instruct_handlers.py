"""The Instruct tab's handler: ``retouch instruct`` on an uploaded picture, with the server's
instruct model (loaded on first use)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retouch.edit.instruct import instruct
from retouch.errors import RetouchError
from retouch.io.convert import read_input_image
from retouch.io.outputs import numbered_stem
from retouch.ui.edit_handlers import overlay, seed_value
from retouch.ui.session import UISession, public


@dataclass
class InstructView:
    """What the Instruct tab shows after a run."""

    image: Path  # the edit, saved with its recipe under outputs/instruct/
    overlay: Any  # PIL: the changed region (with --preserve) or the whole picture, over the input
    summary: str  # one line: the mask, what was kept, the seed
    report: dict[str, Any]  # the JSON report, with no server paths
    files: list[Path]  # the PNG, mask, RGBA layer and report


def run_instruct(
    session: UISession,
    picture: str | None,
    instruction: str,
    *,
    image_guidance_scale: float | None = None,
    guidance_scale: float | None = None,
    steps: int | None = None,
    seed: str | float | None = None,
    preserve: bool = False,
) -> InstructView:
    """``retouch instruct`` (``--preserve`` when asked), saved under outputs/instruct/."""
    if not picture:
        raise RetouchError("upload a picture to edit first")
    read_input_image(picture)  # a clear message for a non-image before anything is copied
    kept = session.keep_input(picture)
    result = instruct(
        session.instruct(),
        kept,
        instruction,
        seed=seed_value(seed),
        steps=int(steps) if steps else None,
        guidance_scale=guidance_scale or None,
        image_guidance_scale=image_guidance_scale or None,
        preserve=bool(preserve),
        progress=True,
    )
    stem = numbered_stem(session.folder("instruct"), result.report["seed"])
    files = result.save(stem.with_name(f"{stem.name}.png"))
    report = result.report
    kept_text = "every pixel outside it is the input's" if report["preserve"] else "Preserve is off: all redrawn"
    return InstructView(
        image=files[""],
        overlay=overlay(read_input_image(kept).image, result.mask),
        summary=(
            f"Region: **{report['region']}**, mask {report['mask_area']:.1%} of the picture ({kept_text}), "
            f"image guidance {report['image_guidance_scale']}, seed {report['seed']}"
        ),
        report=public(report),
        files=[files[""], files[".mask"], files[".layer"], files[".json"]],
    )
