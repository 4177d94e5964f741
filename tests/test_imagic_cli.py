"""``retouch imagic``, the ``imagic`` batch task, replay, and ``retouch evaluate --imagic-report``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retouch.batch import replay, run_batch
from retouch.cli import main
from retouch.io.png import read_recipe
from retouch.train.clip import ClipTrainConfig, save_untrained_clip

TARGET = "a large red circle on a blue background"
SOURCE = "a large red circle on a green background"
FAST = ["--embed-steps", "2", "--tune-steps", "2", "--batch-size", "1", "--steps", "2", "--device", "cpu", "--quiet"]


def imagic_args(image: Path, output: Path, model: Path, *extra: str) -> list[str]:
    """``retouch imagic IMAGE --target TARGET --output OUT --model MODEL EXTRA`` with the fast settings."""
    return ["imagic", str(image), "--target", TARGET, "--output", str(output), "--model", str(model), *extra, *FAST]


@pytest.fixture(scope="module")
def image_path(tmp_path_factory) -> Path:
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[...] = (50, 170, 70)
    pixels[8:24, 8:24] = (220, 40, 40)
    path = tmp_path_factory.mktemp("input") / "in.png"
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    layers = {"vision_layers": 1, "vision_heads": 2, "text_layers": 1, "text_heads": 2}
    tiny = ClipTrainConfig(vision_hidden=32, text_hidden=32, projection_dim=16, **layers)
    return save_untrained_clip(tmp_path_factory.mktemp("clip") / "clip", tiny)


def test_cli_writes_the_edit_and_replay_reproduces_it(tiny_model_dir, image_path, tmp_path, capsys):
    out, cache = tmp_path / "out.png", tmp_path / "cache"
    args = imagic_args(image_path, out, tiny_model_dir, "--seed", "4", "--eta", "0.6", "--region", "global")
    args += ["--cache", str(cache)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "cache miss" in printed and "stage embed" in printed
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["cache"] == "miss" and report["eta"] == 0.6 and report["seed"] == 4
    recipe = read_recipe(out)
    assert recipe["task"] == "imagic" and recipe["target"] == TARGET and recipe["cache"] == str(cache.resolve())
    assert recipe["region"] == "global" and not out.with_suffix(".mask.png").exists()
    assert main(args) == 0
    assert json.loads(out.with_suffix(".json").read_text())["cache"] == "hit"

    again = replay(out, tmp_path / "replay.png", device="cpu")
    assert again.identical
    shutil.rmtree(cache)  # without the cache, stages A and B are recomputed, deterministically
    assert replay(out, tmp_path / "replay2.png", device="cpu").identical


def test_cli_refuses_bad_input(tiny_model_dir, image_path, tmp_path, capsys):
    assert main(["imagic", str(tmp_path / "missing.png"), "--target", TARGET, "--model", str(tiny_model_dir)]) == 2
    assert "image not found" in capsys.readouterr().err
    assert main(imagic_args(image_path, image_path, tiny_model_dir)) == 2
    assert "never overwritten" in capsys.readouterr().err


def test_auto_eta_with_a_clip_judge_then_evaluate_the_sweep(tiny_model_dir, image_path, clip_dir, tmp_path):
    out = tmp_path / "auto.png"
    judged = ["--eta", "auto", "--judge", str(clip_dir), "--source", SOURCE, "--seed", "1"]
    assert main(imagic_args(image_path, out, tiny_model_dir, *judged, "--cache", str(tmp_path / "cache"))) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["eta_mode"] == "auto" and report["judge"].startswith("clip:")
    assert report["region"]["region"] == "background" and out.with_suffix(".mask.png").is_file()  # the captions say
    assert len(report["sweep"]) == 17 and all(Path(row["file"]).is_file() for row in report["sweep"])
    assert all(isinstance(row["judge_score"], float) for row in report["sweep"])
    assert read_recipe(report["sweep"][3]["file"])["eta"] == report["sweep"][3]["eta"]

    plots = tmp_path / "eval"
    evaluate = ["evaluate", "--imagic-report", str(out.with_suffix(".json")), "--clip", str(clip_dir)]
    assert main([*evaluate, "--out", str(plots), "--quiet"]) == 0
    table = json.loads((plots / "imagic_sweep.json").read_text())
    assert [row["eta"] for row in table["rows"]] == [round(0.1 * i, 1) for i in range(17)]
    assert all(-1 <= row["clip_score"] <= 1 for row in table["rows"])
    assert any("LPIPS skipped" in note for note in table["notes"])  # no LPIPS weights here
    assert (plots / "imagic_eta.png").stat().st_size > 10_000


def test_batch_task(tiny_model, image_path, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    fast = {"embed_steps": 2, "tune_steps": 2, "batch_size": 1, "steps": 2}
    job = {"id": "cat", "task": "imagic", "image": str(image_path), "target": TARGET, "eta": 0.4, "seed": 2}
    job.update(fast, region="background", cache=str(tmp_path / "cache"))
    bad = {"id": "bad", "task": "imagic", "image": str(image_path), "target": TARGET, "strength": 0.3}
    jobs.write_text(json.dumps(job) + "\n" + json.dumps(bad) + "\n")
    summary = run_batch(jobs, tmp_path / "out", tiny_model)
    assert summary.failed == 1
    report = json.loads((tmp_path / "out" / "cat.json").read_text())
    assert report["task"] == "imagic" and report["cache"] == "miss" and report["eta"] == 0.4
    assert report["region"]["asked"] == "background" and report["region"]["region"] == "background"
    assert read_recipe(tmp_path / "out" / "cat.png")["seed"] == 2
    error = json.loads((tmp_path / "out" / "bad.error.json").read_text())
    assert "unknown field" in error["error"] and "strength" in error["error"]
