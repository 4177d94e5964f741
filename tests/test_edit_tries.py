"""``edit(tries=N)``: the next seeds while the judge rejects the edit; the kept seed replays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import STEPS
from PIL import Image

from retouch.batch import replay
from retouch.edit import MaskConfig, edit
from retouch.edit.tries import best_of
from retouch.errors import RetouchError

SOURCE = "a small red square on a blue background"
TARGET = "a small green square on a blue background"
FAST = MaskConfig(num_draws=2)


def scene() -> np.ndarray:
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:] = (40, 90, 220)
    pixels[8:20, 10:22] = (220, 40, 40)
    return pixels


def test_best_of_stops_at_the_first_accepted_seed_and_else_keeps_the_best_score():
    scores = {5: (0.2, False), 6: (0.9, False), 7: (0.5, True), 8: (1.0, True)}
    seed, result, trials = best_of(lambda s: s * 10, lambda r: scores[r // 10], seed=5, tries=4)
    assert (seed, result) == (7, 70) and [t.seed for t in trials] == [5, 6, 7]
    seed, result, trials = best_of(lambda s: s * 10, lambda r: scores[r // 10], seed=5, tries=2)
    assert (seed, result) == (6, 60) and not any(t.took for t in trials)  # none took: the higher score


class RejectFirst:
    """Rejects its first ``n`` calls, then accepts; remembers the pictures it saw."""

    def __init__(self, n: int) -> None:
        self.n, self.seen = n, []

    def __call__(self, image: Image.Image) -> tuple[float, bool]:
        self.seen.append(np.asarray(image))
        return float(len(self.seen)), len(self.seen) > self.n


def test_edit_tries_the_next_seeds_and_records_the_one_kept(tiny_model, tmp_path):
    judge, image = RejectFirst(2), tmp_path / "in.png"
    Image.fromarray(scene()).save(image)
    result = edit(tiny_model, image, SOURCE, TARGET, seed=3, steps=STEPS, judge=judge, tries=4)  # replayable settings
    tries = result.report["tries"]
    assert [t["seed"] for t in tries] == [3, 4, 5] and [t["took"] for t in tries] == [False, False, True]
    assert result.report["seed"] == result.recipe["seed"] == 5
    assert np.array_equal(np.asarray(result.image), judge.seen[-1])
    assert not np.array_equal(judge.seen[0], judge.seen[2])  # another seed, another picture
    single = edit(tiny_model, scene(), SOURCE, TARGET, seed=5, steps=STEPS)
    assert np.array_equal(np.asarray(single.image), np.asarray(result.image)) and single.report["tries"] is None
    result.save(tmp_path / "out.png")
    assert replay(tmp_path / "out.png", tmp_path / "again.png", tiny_model).identical


def test_tries_need_a_judge_and_a_sane_count(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr("retouch.metrics.clip_score.bundled_clip_path", lambda: tmp_path / "no-clip")
    with pytest.raises(RetouchError, match="tries must be"):
        edit(tiny_model, scene(), SOURCE, TARGET, seed=0, steps=STEPS, tries=0)
    with pytest.raises(RetouchError, match="judge"):
        edit(tiny_model, scene(), "a dog", "a cat", seed=0, steps=STEPS, mask_config=FAST, region="foreground", tries=2)


def test_a_batch_edit_job_takes_tries(tiny_model, tmp_path):
    from retouch.batch import run_batch
    from retouch.worlds import shapes64

    image = tmp_path / "in.png"  # 64 x 64: the oracle reads only shapes-64's canvas
    Image.fromarray(shapes64.Scene("blue", "red", "square", "small", x0=20, y0=20).render()).save(image)
    job = {"task": "edit", "id": "e", "image": str(image), "source": SOURCE, "target": TARGET, "seed": 3,
           "steps": STEPS, "judge": "oracle", "tries": 2}  # fmt: skip
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps(job) + "\n")
    run_batch(jobs, tmp_path / "out", tiny_model)
    report = json.loads((tmp_path / "out" / "e.json").read_text())
    assert [t["seed"] for t in report["tries"]] == [3, 4]  # the tiny model draws noise: both rejected


def test_auto_tries_only_where_the_oracle_judges():
    """``tries="auto"``: 3 draws when the shapes-64 oracle reads the target caption and pictures of
    this size, else 1 (free captions, a CLIP judge, or a picture the oracle cannot read)."""
    from retouch.edit.tries import AUTO_TRIES, resolve_tries

    canonical, picture = "a large green circle on a blue background", np.zeros((64, 64, 3), np.uint8)
    assert resolve_tries("auto", None, canonical, picture) == AUTO_TRIES == 3
    assert resolve_tries("auto", "oracle", canonical, picture) == 3
    assert resolve_tries("auto", "/models/clip", canonical, picture) == 1
    assert resolve_tries("auto", None, "a photo of a cat wearing a hat", picture) == 1
    assert resolve_tries("auto", None, canonical, np.zeros((32, 32, 3), np.uint8)) == 1
    assert resolve_tries(2, "/models/clip", "a photo of a cat", picture) == 2
