"""Benchmark Imagic (``retouch imagic --eta auto``) on the shapes-64 world.

    python benchmarks/bench_shapes_imagic.py --n 60 --workers 2 --out outputs/bench_imagic.json      # dev split
    python benchmarks/bench_shapes_imagic.py --n 60 --workers 2 --split test --out outputs/bench_imagic_test.json
    python benchmarks/bench_shapes_imagic.py --plot-one docs/img/imagic_eta.png     # one edit's eta sweep
    python benchmarks/bench_shapes_imagic.py --n 1 --model /tmp/tiny64 --embed-steps 2 --tune-steps 2 --steps 2

N random edit pairs (a third each: object shape, object colour, background colour), the source
rendered, only the target caption given (Imagic needs no source caption). Each runs with
``eta="auto"`` (judge: the oracle, or ``--judge``) and a fresh cache, so the time is the whole cost:
- success: the oracle reads every field of the target scene from the output; "in place" also asks
  that the object's bounding-box centre lies within 4 px of the target scene's (shapes_scoring.py);
- colour: for colour and background edits, the share whose object's median colour lies within 20
  RGB units of the target palette colour;
- preservation: PSNR between input and output outside the ground-truth edit region (median; by
  default stage C redraws only its automatic mask, with ``region="global"`` the whole picture);
- seconds per picture (stages A and B, and the eta sweep).
Bars (bundled model, this 2-core CPU): success >= 75%, PSNR median >= 28 dB, <= 90 s per picture.
Prints figures; never fails on them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from shapes_scoring import add_split_arguments, base_seed, centre_shift, in_place
from workers import map_in_workers, worker_model, worker_settings

from retouch.edit.imagic import DEFAULT_STEPS, imagic
from retouch.metrics.masked import masked_psnr
from retouch.metrics.report import json_safe, plot_edit_panel
from retouch.models.loading import LoadedModel, load_model
from retouch.worlds import shapes64

KINDS = ("shape", "color", "background")
BARS = {"success": 0.75, "psnr_median": 28.0, "seconds_per_image": 90.0}


def run_pair(model: LoadedModel, pair: shapes64.EditPair, seed: int, cache: Path, args: argparse.Namespace) -> Any:
    return imagic(
        model, pair.source.render(), pair.target_caption, eta="auto", seed=seed, seeds=args.seeds, tries=args.tries,
        embed_steps=args.embed_steps, tune_steps=args.tune_steps, steps=args.steps,
        guidance_scale=args.guidance_scale, judge=args.judge, cache_dir=cache,
    )  # fmt: skip


def score(pair: shapes64.EditPair, output: np.ndarray) -> dict[str, Any]:
    reading = shapes64.read_scene(output)
    success = all(reading.matches(pair.target).values())
    return {
        "success": success,
        "success_in_place": success and in_place(output, pair.target),
        "centre_shift": centre_shift(output, pair.target),
        "colour_error": colour_error(output, reading, pair.target),
        "psnr_outside": masked_psnr(pair.source.render(), output, ~pair.mask),
    }


def colour_error(output: np.ndarray, reading: shapes64.Reading, target: shapes64.Scene) -> float:
    """RGB distance of the object's median colour to the target's palette colour (pastel-mixed
    when the target is pastel); inf when no object is read."""
    if reading.object_mask is None:
        return math.inf
    want = np.asarray(shapes64.PALETTE[target.color], dtype=np.float64)
    if target.style == "pastel":
        want = shapes64.pastel(want)
    return float(np.linalg.norm(np.median(output[reading.object_mask], axis=0) - want))


def by_kind(rows: list[dict[str, Any]], key: str) -> dict[str, float]:
    kinds = [kind for kind in KINDS if any(r["kind"] == kind for r in rows)]
    return {kind: float(np.mean([r.get(key, False) for r in rows if r["kind"] == kind])) for kind in kinds}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r.get("error") is None]
    colour_rows = [r for r in rows if r["kind"] in ("color", "background")]
    psnr = [r["psnr_outside"] for r in done]
    return {
        "n": len(rows),
        "errors": len(rows) - len(done),
        "success": float(np.mean([r.get("success", False) for r in rows])) if rows else math.nan,
        "success_by_kind": by_kind(rows, "success"),
        "success_in_place": float(np.mean([r.get("success_in_place", False) for r in rows])) if rows else math.nan,
        "success_in_place_by_kind": by_kind(rows, "success_in_place"),
        "colour_within_20": float(np.mean([r.get("colour_error", math.inf) <= 20 for r in colour_rows]))
        if colour_rows else math.nan,
        "psnr_median": float(np.median(psnr)) if psnr else math.nan,
        "seconds_per_image": statistics.median(r["seconds"] for r in done) if done else math.nan,
        "eta_median": statistics.median(r["eta"] for r in done) if done else math.nan,
        "sweeps_per_image": float(np.mean([r.get("tries", 1) for r in done])) if done else math.nan,
    }


def run_item(item: tuple[int, str, shapes64.EditPair]) -> dict[str, Any]:
    """One picture, in a worker (see ``workers.py``; stages A and B need gradients back on)."""
    i, kind, pair = item
    args = worker_settings()
    row: dict[str, Any] = {"kind": kind, "source": pair.source_caption, "target": pair.target_caption}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache, torch.enable_grad():
        try:
            result = run_pair(worker_model(), pair, args.seed + i, Path(cache), args)
            row.update(score(pair, np.asarray(result.image)))
            row.update(
                eta=result.report["eta"],
                accepted=result.report["choice"]["accepted"],
                tries=result.report["tries"]["drawn"],
                error=None,
            )
        except Exception as e:  # one failure must not stop the benchmark
            row["error"] = f"{type(e).__name__}: {e}"
    row["seconds"] = time.perf_counter() - start
    psnr = row.get("psnr_outside", math.nan)
    print(f"{i + 1}/{args.n} {kind:10} eta {row.get('eta')} success {row.get('success')} "
          f"PSNR {psnr:.1f} dB {row['seconds']:.1f}s {row['error'] or ''}", flush=True)  # fmt: skip
    if args.rows:  # one line per finished picture, so a stopped run keeps what it did
        with open(args.rows, "a") as f:
            f.write(json.dumps(json_safe({"index": i, **row})) + "\n")
    return row


def done_rows(path: Path | None) -> dict[int, dict[str, Any]]:
    """Rows a stopped run with the same ``--rows`` file already finished, by index."""
    if path is None or not path.is_file():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for row in rows:  # json_safe wrote inf as null
        for key in ("psnr_outside", "colour_error", "centre_shift"):
            if key in row and row[key] is None:
                row[key] = math.inf
    return {row.pop("index"): row for row in rows}


def plot_one(model: LoadedModel, path: Path, args: argparse.Namespace) -> None:
    """One edit's sweep: input, chosen output, each eta's picture (the chosen seed), the scores."""
    pair = shapes64.sample_edit(np.random.default_rng(args.seed), "color")
    with tempfile.TemporaryDirectory() as cache:
        result = run_pair(model, pair, args.seed, Path(cache), args)
    chosen_seed = result.report["seed"]
    samples = [s for s in result.sweep if s.seed == chosen_seed]
    source = pair.source.render()
    psnr_outside = [masked_psnr(source, np.asarray(s.image), ~pair.mask) for s in samples]
    series = {f"judge ({result.report['judge']})": [s.scores.get("judge_score") for s in samples]}
    kept = "" if any(math.isfinite(p) for p in psnr_outside) else "; outside the edit: the input's pixels at every eta"
    if not kept:
        series["PSNR outside the edit, dB"] = [p if math.isfinite(p) else None for p in psnr_outside]
    plot_edit_panel(
        Image.fromarray(source), result.image, [(f"eta {s.eta:.1f}", s.image) for s in samples],
        [s.eta for s in samples], series, path, "eta",
        f"Imagic: '{pair.source_caption}' -> '{pair.target_caption}' (chosen eta {result.report['eta']}){kept}",
        mark_x=result.report["eta"],
    )  # fmt: skip
    print(f"wrote {path}: chosen eta {result.report['eta']}, seed {chosen_seed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--model", default="shapes-64")
    add_split_arguments(parser)
    parser.add_argument("--seeds", type=int, default=1, help="seeds per eta")
    parser.add_argument(
        "--tries",
        type=lambda v: v if v == "auto" else int(v),
        default="auto",
        help="sweeps from the next seeds while none is accepted (default: auto, as imagic)",
    )
    parser.add_argument("--embed-steps", type=int, default=None, help="default: sized to the model")
    parser.add_argument("--tune-steps", type=int, default=None, help="default: sized to the model")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    parser.add_argument("--guidance-scale", type=float, default=None, help="default: the model's recommended")
    parser.add_argument("--judge", default=None, help="default: the oracle (canonical captions)")
    parser.add_argument("--out", type=Path, default=None, help="JSON of every row and the summary")
    parser.add_argument("--workers", type=int, default=1, help="processes, one thread each")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where a GPU is present")
    parser.add_argument("--rows", type=Path, default=None, metavar="JSONL",
                        help="append each finished row here; a rerun with the same file skips them")
    parser.add_argument("--plot-one", type=Path, default=None, metavar="PNG", help="plot one edit's eta sweep")
    args = parser.parse_args()
    args.seed = base_seed(args, "imagic")
    if args.plot_one:
        plot_one(load_model(args.model, device=args.device), args.plot_one, args)
        return

    rng = np.random.default_rng(args.seed)
    items = [(i, KINDS[i % len(KINDS)], shapes64.sample_edit(rng, KINDS[i % len(KINDS)])) for i in range(args.n)]
    done = done_rows(args.rows)
    todo = [item for item in items if item[0] not in done]
    fresh = dict(zip([item[0] for item in todo], map_in_workers(run_item, todo, args.workers, args.model,
                                                                args.device, args), strict=True))  # fmt: skip
    rows = [done.get(i) or fresh[i] for i in range(args.n)]
    summary = summarize(rows)
    print(json.dumps(json_safe(summary), indent=2))
    for name, bar in BARS.items():
        value = summary[name]
        ok = value <= bar if name == "seconds_per_image" else value >= bar
        print(f"  {name}: {value:.3f} (bar {'<=' if name == 'seconds_per_image' else '>='} {bar}) "
              f"{'meets' if ok else 'misses'}")  # fmt: skip
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(json_safe({"summary": summary, "rows": rows, "args": vars(args)}),
                                       indent=2, default=str))  # fmt: skip


if __name__ == "__main__":
    main()
