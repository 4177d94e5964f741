"""Metric tables (Markdown, CSV, JSON) and plots (matplotlib, no pyplot state).

    write_tables(rows, "out/", "metrics", summary={...})   # out/metrics.md, .csv, .json
    plot_curves(etas, {"CLIP score": clip, "1 - LPIPS": keep}, "out/eta.png", xlabel="eta")
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from retouch.io.atomic import atomic_write_bytes, atomic_write_json, atomic_write_text

if TYPE_CHECKING:
    from matplotlib.figure import Figure

Row = Mapping[str, Any]


def columns(rows: Sequence[Row]) -> list[str]:
    """Every key of every row, in the order first seen."""
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def json_safe(value: Any) -> Any:
    """JSON has no inf or nan: they become None (null), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, np.generic):
        return json_safe(value.item())
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "inf" if value == math.inf else f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(rows: Sequence[Row], cols: Sequence[str] | None = None) -> str:
    cols = list(cols or columns(rows))
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Row], cols: Sequence[str] | None = None) -> str:
    cols = list(cols or columns(rows))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row.get(c) is None else row.get(c) for c in cols})
    return buffer.getvalue()


def write_tables(
    rows: Sequence[Row],
    out_dir: str | os.PathLike[str],
    stem: str = "metrics",
    summary: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Path]:
    """``stem.md`` (summary, notes, then the rows), ``stem.csv`` (the rows) and ``stem.json``
    (everything), written atomically into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    parts = []
    if summary:
        parts += ["## Summary\n", markdown_table([{"metric": k, "value": v} for k, v in summary.items()])]
    if notes:
        parts += ["## Notes\n", "".join(f"- {note}\n" for note in notes)]
    parts += ["## Per item\n", markdown_table(rows) if rows else "(none)\n"]
    paths = {
        "md": atomic_write_text(out_dir / f"{stem}.md", "\n".join(parts)),
        "csv": atomic_write_text(out_dir / f"{stem}.csv", csv_table(rows) if rows else ""),
        "json": atomic_write_json(
            out_dir / f"{stem}.json",
            json_safe({"summary": dict(summary or {}), "notes": list(notes), "rows": [dict(r) for r in rows]}),
        ),
    }
    return paths


def _figure(**kwargs: Any) -> Figure:
    """A matplotlib figure outside pyplot: no global state, no display needed (imported late:
    matplotlib takes a while to import and only plots need it)."""
    from matplotlib.figure import Figure

    return Figure(layout="constrained", **kwargs)


def _save(figure: Figure, path: str | os.PathLike[str]) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buffer = io.BytesIO()
    FigureCanvasAgg(figure).print_png(buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def _draw_curves(
    figure: Figure,
    slots: Sequence[Any],
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    xlabel: str,
    mark_x: float | None,
) -> None:
    for slot, (name, values) in zip(slots, series.items(), strict=True):
        axes = figure.add_subplot(slot)
        ys = [np.nan if v is None else float(v) for v in values]
        axes.plot(x, ys, marker="o")
        axes.set_title(name, fontsize=9, loc="left")
        axes.grid(alpha=0.3)
        if mark_x is not None:
            axes.axvline(mark_x, color="tab:red", linestyle="--", linewidth=1)
        axes.set_xlabel(xlabel)


@dataclass
class Curves:
    """A figure of columns against one axis, drawn by ``plot_curves``."""

    x: list[float]  # the swept setting, one value per row
    series: dict[str, list[float | None]]  # panel label -> one value per x (None: a gap)
    file_name: str  # the PNG's name in the output folder
    xlabel: str
    title: str = ""
    mark_x: float | None = None  # a dashed line, e.g. at the chosen setting

    def draw(self, out_dir: str | os.PathLike[str]) -> Path:
        return plot_curves(self.x, self.series, Path(out_dir) / self.file_name, self.xlabel, self.title, self.mark_x)


def plot_curves(
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike[str],
    xlabel: str,
    title: str = "",
    mark_x: float | None = None,
) -> Path:
    """One panel per series against ``x`` (missing values left as gaps), a dashed line at ``mark_x``."""
    figure = _figure(figsize=(6, 2.4 * max(1, len(series))))
    grid = figure.add_gridspec(max(1, len(series)), 1)
    _draw_curves(figure, [grid[i, 0] for i in range(len(series))], x, series, xlabel, mark_x)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_edit_panel(
    source: Image.Image,
    chosen: Image.Image,
    strip: Sequence[tuple[str, Image.Image]],
    x: Sequence[float],
    series: Mapping[str, Sequence[float | None]],
    path: str | os.PathLike[str],
    xlabel: str,
    title: str = "",
    mark_x: float | None = None,
) -> Path:
    """Input and chosen output, a labelled strip of the sweep's pictures, then the score curves."""
    n = max(len(strip), 2)
    figure = _figure(figsize=(max(8, 1.1 * n), 4 + 2.2 * len(series)))
    grid = figure.add_gridspec(2 + len(series), n, height_ratios=[2, 1] + [1.6] * len(series))
    for k, (label, picture) in enumerate((("input", source), ("chosen", chosen))):
        axes = figure.add_subplot(grid[0, k * n // 2 : (k + 1) * n // 2])
        axes.imshow(np.asarray(picture.convert("RGB")), interpolation="nearest")
        axes.set_title(label)
        axes.axis("off")
    for k, (label, picture) in enumerate(strip):
        axes = figure.add_subplot(grid[1, k])
        axes.imshow(np.asarray(picture.convert("RGB")), interpolation="nearest")
        axes.set_title(label, fontsize=7)
        axes.axis("off")
    _draw_curves(figure, [grid[2 + i, :] for i in range(len(series))], x, series, xlabel, mark_x)
    if title:
        figure.suptitle(title)
    return _save(figure, path)
