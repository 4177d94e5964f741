"""run_batch and the task registry: outputs, failures, resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import STEPS

from retouch.batch import TaskContext, TaskOutput, TaskRegistry, default_registry, read_jobs, run_batch
from retouch.errors import RetouchError
from retouch.io.png import read_recipe


def write_jobs(path: Path, *lines: str | dict) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def job(job_id: str, **fields) -> dict:
    return {"id": job_id, "task": "generate", "prompt": "a red circle", "steps": STEPS, "seed": 1, **fields}


def test_happy_path_writes_png_and_report(tiny_model, tmp_path):
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", job("g1"), job("g2", seed=2, num_images=2), {"id": "g3", "prompt": "x"}
    )
    summary = run_batch(jobs, tmp_path / "out", tiny_model)
    out = tmp_path / "out"
    assert summary.to_dict()["ok"] == 3 and summary.failed == 0
    assert sorted(p.name for p in out.iterdir()) == "g1.json g1.png g2-0.png g2-1.png g2.json g3.json g3.png".split()
    report = json.loads((out / "g2.json").read_text())
    assert report["images"] == ["g2-0.png", "g2-1.png"] and report["seeds"] == [2, 3]
    assert report["recipe"]["num_images"] == 2 and report["timings"]["task_s"] > 0
    assert read_recipe(out / "g2-1.png")["seed"] == 3
    defaults = json.loads((out / "g3.json").read_text())["recipe"]  # missing fields took the defaults
    assert (defaults["steps"], defaults["scheduler"], defaults["guidance_scale"]) == (25, "euler-a", 7.5)


def test_failing_job_writes_error_and_others_finish(tiny_model, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", job("ok1"), job("bad", scheduler="nope"), job("ok2"))
    summary = run_batch(jobs, tmp_path / "out", tiny_model)
    assert [(r.id, r.status) for r in summary.results] == [("ok1", "ok"), ("bad", "failed"), ("ok2", "ok")]
    error = json.loads((tmp_path / "out" / "bad.error.json").read_text())
    assert "unknown scheduler 'nope'" in error["error"] and error["line"] == 2
    assert not (tmp_path / "out" / "bad.json").exists()


def test_resume_skips_finished_jobs(tiny_model, tmp_path):
    calls = []
    registry = TaskRegistry()

    @registry.register("generate")
    def counting(ctx: TaskContext, job: dict) -> TaskOutput:
        calls.append(job["id"])
        return default_registry().get("generate")(ctx, job)

    jobs = write_jobs(tmp_path / "jobs.jsonl", job("a"), job("b"))
    out = tmp_path / "out"
    run_batch(jobs, out, tiny_model, registry=registry)
    (out / "b.json").unlink()  # as if killed after b.png but before b's report
    (out / ".b.png.x1y2.tmp").write_bytes(b"half-written")
    summary = run_batch(jobs, out, tiny_model, registry=registry)
    assert calls == ["a", "b", "b"]
    assert [r.status for r in summary.results] == ["skipped", "ok"]
    assert not (out / ".b.png.x1y2.tmp").exists()


def test_fixed_job_clears_its_old_error(tiny_model, tmp_path):
    out = tmp_path / "out"
    run_batch(write_jobs(tmp_path / "jobs.jsonl", job("a", steps=0)), out, tiny_model)
    assert (out / "a.error.json").exists()
    run_batch(write_jobs(tmp_path / "jobs.jsonl", job("a")), out, tiny_model)
    assert (out / "a.json").exists() and not (out / "a.error.json").exists()


def test_malformed_lines_fail_alone(tiny_model, tmp_path):
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", job("a"), "{not json", "", "[1, 2]", {"id": "../x", "prompt": "p"}
    )
    summary = run_batch(jobs, tmp_path / "out", tiny_model)
    expected = [("a", "ok"), ("line-2", "failed"), ("line-4", "failed"), ("line-5", "failed")]
    assert [(r.id, r.status) for r in summary.results] == expected
    assert "line 2: not valid JSON" in summary.results[1].error
    assert "line 5: bad id '../x'" in summary.results[3].error
    assert (tmp_path / "out" / "line-2.error.json").exists()


def test_wrong_fields_fail_the_job(tiny_model, tmp_path):
    jobs = write_jobs(
        tmp_path / "jobs.jsonl", job("a", sed=3), job("b", steps="4"), {"id": "c"}, job("d", task="x")
    )
    errors = [r.error for r in run_batch(jobs, tmp_path / "out", tiny_model).results]
    assert "unknown field(s) ['sed']" in errors[0]
    assert "'steps' has the wrong type" in errors[1]
    assert "needs a 'prompt'" in errors[2]
    assert "unknown task 'x'; known tasks: generate" in errors[3]


def test_job_for_another_model_fails(tiny_model, tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", job("a", model="some/other-model"))
    assert (
        "job asks for model 'some/other-model'"
        in run_batch(jobs, tmp_path / "out", tiny_model).results[0].error
    )


def test_duplicate_ids_are_refused_up_front(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", job("a"), job("b"), job("a"))
    with pytest.raises(RetouchError, match="duplicate job id 'a' on lines 1 and 3"):
        read_jobs(jobs)


def test_unwritable_output_is_refused_up_front(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", job("a"))
    (tmp_path / "file").write_text("")
    with pytest.raises(RetouchError, match="cannot write to output folder"):
        run_batch(jobs, tmp_path / "file" / "out", "model/not-loaded")


def test_missing_jobs_file(tmp_path):
    with pytest.raises(RetouchError, match="jobs file not found"):
        run_batch(tmp_path / "nope.jsonl", tmp_path / "out", "model/not-loaded")


def test_finished_batch_does_not_load_the_model(tmp_path):
    jobs = write_jobs(tmp_path / "jobs.jsonl", job("a"))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.json").write_text("{}")
    summary = run_batch(jobs, tmp_path / "out", "not/a-model")  # would fail if loaded
    assert summary.results[0].status == "skipped"


def test_registry():
    registry = TaskRegistry()
    registry.register("one", lambda ctx, job: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("one", lambda ctx, job: None)
    assert registry.names() == ("one",) and "generate" in default_registry().names()


def test_check_input_unchanged_compares_size_and_pixels(tmp_path):
    import numpy as np
    from PIL import Image

    from retouch.batch.tasks import check_input_unchanged
    from retouch.io.hashing import pixels_sha256

    pixels = np.zeros((16, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    recipe = {"image": str(tmp_path / "in.png"), "width": 24, "height": 16, "image_sha256": pixels_sha256(pixels)}
    check_input_unchanged(recipe)
    check_input_unchanged({"image": str(tmp_path / "missing.png")})  # nothing recorded: nothing to check
    with pytest.raises(RetouchError, match="made from a 32x16 image"):
        check_input_unchanged({**recipe, "width": 32})
    pixels[0, 0] = 255
    Image.fromarray(pixels).save(tmp_path / "in.png")
    with pytest.raises(RetouchError, match="changed since the recipe was written"):
        check_input_unchanged(recipe)
