"""Numbers a user gives are finite and in range everywhere (API, CLI, batch, replay); recipes are
strict JSON; a replayed recipe is checked whole before any work; a global edit prints its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import STEPS
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retouch.batch import read_jobs, replay, run_batch
from retouch.cli import main
from retouch.core.generate import generate
from retouch.edit import edit
from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json
from retouch.io.png import encode_png
from retouch.steer.interpolate import interpolate
from retouch.steer.style import parse_sweep, stylize

NAN, INF = float("nan"), float("inf")
SOURCE = "a large red circle on a blue background"
RECIPE = {
    "task": "generate", "prompt": "a red circle", "negative_prompt": "", "seed": 1, "steps": STEPS,
    "guidance_scale": 7.5, "scheduler": "euler-a", "width": 32, "height": 32, "model": "tiny",
}


def strict_json(text: str):
    """json.loads that refuses the bare NaN / Infinity Python's json would accept."""
    return json.loads(text, parse_constant=lambda name: pytest.fail(f"bare {name} in JSON"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"guidance_scale": NAN}, "guidance_scale must be a finite number"),
        ({"guidance_scale": INF}, "guidance_scale must be a finite number"),
        ({"guidance_scale": -1.0}, r"guidance_scale must be a finite number in \[0, 50\]"),
        ({"steps": 10**6}, r"steps must be a whole number in \[1, 1000\]"),
        ({"num_images": 10**6}, "num_images must be"),
        ({"width": 4096}, r"width must be a whole number in \[1, 2048\]"),
        ({"width": 2048, "height": 2048}, "megapixels; the limit is 4.0"),
    ],
)
def test_generate_refuses_before_sampling(tiny_model, kwargs, message):
    with pytest.raises(RetouchError, match=message):
        generate(tiny_model, "a red circle", **{"steps": STEPS, "seed": 1, **kwargs})


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: edit(m, np.zeros((32, 32, 3), np.uint8), SOURCE, SOURCE + ", pastel", guidance_scale=NAN),
         "guidance_scale must be a finite number"),
        (lambda m: edit(m, np.zeros((32, 32, 3), np.uint8), SOURCE, SOURCE + ", pastel", steps=5000),
         "steps must be"),
        (lambda m: interpolate(m, "a", "b", frames=10**9), "frames must be"),
        (lambda m: interpolate(m, "a", "b", guidance_scale=INF), "guidance_scale must be a finite number"),
        (lambda m: stylize(m, "a red circle", "pastel", amount=NAN), "amount must be a finite number"),
        (lambda m: stylize(m, "a red circle", "pastel", amount=1e9), "amount must be"),
    ],
)
def test_edit_interpolate_style_refuse_bad_numbers(tiny_model, call, message):
    with pytest.raises(RetouchError, match=message):
        call(tiny_model)


def test_imagic_refuses_bad_numbers(tiny_model):
    from retouch.edit.imagic import imagic

    image = np.zeros((32, 32, 3), np.uint8)
    for kwargs, message in (
        ({"eta": INF}, "eta must be"),
        ({"guidance_scale": NAN}, "guidance_scale must be a finite number"),
        ({"lr_embed": INF}, "lr_embed must be a finite number"),
        ({"embed_steps": 10**9}, "embed_steps must be"),
    ):
        with pytest.raises(RetouchError, match=message):
            imagic(tiny_model, image, "a red square", use_cache=False, **kwargs)


@pytest.mark.parametrize("spec", ["0:nan:3", "inf:1:3", "0:1:100000"])
def test_style_sweep_limits(spec):
    with pytest.raises(RetouchError, match="the sweep's"):
        parse_sweep(spec)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e9"])
def test_cli_guidance_scale_is_refused_with_exit_2(tiny_model_dir, tmp_path, capsys, value):
    argv = ["generate", "a red circle", f"--guidance-scale={value}", "--steps", str(STEPS), "--seed", "1"]
    assert main([*argv, "--model", str(tiny_model_dir), "--output", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "guidance_scale must be" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no picture with "CFG scale: nan"


def test_batch_job_with_nan_fails_alone_and_writes_strict_json(tiny_model, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    lines = [
        json.dumps({"id": "bad", "prompt": "x", "guidance_scale": NAN}),  # json.dumps writes a bare NaN
        json.dumps({"id": "big", "prompt": "x", "steps": 10**7}),
        json.dumps({"id": "ok", "prompt": "x", "steps": STEPS, "seed": 1}),
    ]
    jobs.write_text("\n".join(lines) + "\n")
    summary = run_batch(jobs, tmp_path / "out", tiny_model)
    assert [r.status for r in summary.results] == ["failed", "failed", "ok"]
    error = strict_json((tmp_path / "out" / "bad.error.json").read_text())
    assert "guidance_scale must be a finite number" in error["error"] and error["job"]["guidance_scale"] is None
    assert "steps must be" in strict_json((tmp_path / "out" / "big.error.json").read_text())["error"]


def test_recipes_and_reports_are_never_bare_nan(tmp_path):
    with pytest.raises(RetouchError, match="not finite"):
        encode_png(Image.new("RGB", (8, 8)), {**RECIPE, "guidance_scale": NAN})
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"psnr": INF})
    assert not list(tmp_path.iterdir())


def tampered_png(path, recipe_text: str):
    info = PngInfo()
    info.add_text("retouch", recipe_text)
    Image.new("RGB", (32, 32)).save(path, pnginfo=info)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ('"num_images": 1000', "makes 1000 images"),
        ('"steps": 100000000', "steps must be"),
        ('"guidance_scale": NaN', "guidance_scale must be a finite number"),
        ('"guidance_scale": Infinity', "guidance_scale must be a finite number"),
        ('"width": 100000', "width must be"),
        ('"seed": -5', "seed must be"),
        ('"scheduler": 3', "wrong type"),
    ],
)
def test_replay_checks_the_whole_recipe_before_loading_the_model(tmp_path, change, message):
    key = change.split(":")[0].strip('"')
    text = json.dumps({k: v for k, v in RECIPE.items() if k != key}, sort_keys=True)[:-1] + ", " + change + "}"
    path = tampered_png(tmp_path / "t.png", text)
    with pytest.raises(RetouchError, match=message):
        replay(path, tmp_path / "again.png", "no/such-model")  # loading it would fail differently
    assert not (tmp_path / "again.png").exists()


def test_replay_of_a_tampered_edit_recipe(tmp_path):
    recipe = {"task": "edit", "image": "in.png", "source": "a", "target": "b", "strength": "NaN", "steps": 2}
    path = tampered_png(tmp_path / "t.png", json.dumps(recipe).replace('"NaN"', "NaN"))
    with pytest.raises(RetouchError, match="strength must be a finite number"):
        replay(path, model="no/such-model")


def test_read_jobs_accepts_limits_at_their_edges(tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "a", "prompt": "x", "steps": 1000, "guidance_scale": 0}) + "\n")
    assert read_jobs(jobs)[0].recipe["steps"] == 1000


# Item 1 of the hardening issue: an edit with no pixel outside its mask prints JSON and exits 0.
@pytest.mark.parametrize("case", ["global", "1x1", "grey16", "500 words"])
def test_edit_json_when_no_pixel_lies_outside(tiny_model_dir, tmp_path, capsys, case):
    inputs = {
        "global": Image.new("RGB", (32, 32), (200, 30, 30)),
        "1x1": Image.new("RGB", (1, 1), (200, 30, 30)),
        "grey16": Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)),
        "500 words": Image.new("RGB", (32, 32), (200, 30, 30)),
    }
    inputs[case].save(tmp_path / "in.png")
    target = f"{SOURCE}, pastel" + (" watercolor" * 500 if case == "500 words" else "")
    argv = ["--json", "--quiet", "edit", str(tmp_path / "in.png"), "--source", SOURCE, "--target", target]
    argv += ["--region", "global", "--output", str(tmp_path / "o.png"), "--steps", str(STEPS), "--seed", "1"]
    assert main([*argv, "--model", str(tiny_model_dir)]) == 0
    payload = strict_json(capsys.readouterr().out)
    assert payload["metrics"]["outside"] == {"psnr": None, "ssim": None, "pixels": 0, "identical": False}
    assert payload["region"] == "global" and set(payload["files"]) >= {"", ".mask", ".layer"}
