"""`retouch edit` end to end on the tiny random model: the kept pixels, the files, every input
mode, batch, replay, the strength search and each method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import STEPS
from PIL import Image

from retouch.batch import replay, run_batch
from retouch.cli import main
from retouch.edit import MaskConfig, edit
from retouch.edit.layer import feather_alpha
from retouch.errors import RetouchError
from retouch.io.png import read_recipe

SOURCE = "a small red square on a blue background"
TARGET = "a small green square on a blue background"
FAST = MaskConfig(num_draws=2)  # two noise draws: every code path, a fraction of the time


def scene(width: int = 32, height: int = 32) -> np.ndarray:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = (40, 90, 220)
    pixels[8:20, 10:22] = (220, 40, 40)
    return pixels


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(scene()).save(path)
    return path


@pytest.mark.parametrize("scheduler", ["ddim", "euler"])
def test_pixels_outside_mask_and_feather_are_the_input_bit_for_bit(tiny_model, scheduler):
    source = scene()
    result = edit(tiny_model, source, SOURCE, TARGET, seed=0, steps=STEPS, scheduler=scheduler, mask_config=FAST)
    mask = np.asarray(result.mask) == 255
    kept = feather_alpha(mask) == 0
    output = np.asarray(result.image)
    assert result.report["region"] == "foreground" and result.report["region_confidence"] == 1.0
    assert kept.sum() > 50 and np.array_equal(output[kept], source[kept])
    assert not np.array_equal(output[mask], source[mask])  # and the edit did change the inside
    assert result.report["mask_area"] == pytest.approx(mask.mean())
    metrics = result.report["metrics"]
    assert metrics["inside"]["pixels"] == mask.sum() and metrics["outside"]["pixels"] == kept.sum()
    assert metrics["outside"]["identical"] and metrics["outside"]["psnr"] is None
    assert metrics["feather"]["pixels"] == (~mask & ~kept).sum()


def test_given_mask_keeps_everything_else(tiny_model):
    source = scene(40, 24)
    user_mask = np.zeros((24, 40), dtype=bool)
    user_mask[6:14, 20:30] = True
    result = edit(tiny_model, source, SOURCE, TARGET, mask=user_mask, method="inpaint", seed=1, steps=STEPS)
    kept = feather_alpha(user_mask) == 0
    assert np.array_equal(np.asarray(result.mask) == 255, user_mask)
    assert np.array_equal(np.asarray(result.image)[kept], source[kept])
    assert result.report["region"] == "mask" and result.recipe["mask"] is None


def test_cli_writes_four_files_and_replay_is_bit_for_bit(tiny_model_dir, image_path, tmp_path, capsys):
    before = image_path.read_bytes()
    out = tmp_path / "out.png"
    argv = ["edit", str(image_path), "--source", SOURCE, "--target", TARGET, "--output", str(out)]
    code = main([*argv, "--model", str(tiny_model_dir), "--steps", str(STEPS), "--seed", "3", "--json", "--quiet"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["region"] == "foreground" and set(printed["files"]) == {"", ".mask", ".layer", ".json"}
    assert image_path.read_bytes() == before  # the input is never touched
    image, mask, layer = (Image.open(tmp_path / name) for name in ("out.png", "out.mask.png", "out.layer.png"))
    assert (image.mode, mask.mode, layer.mode) == ("RGB", "L", "RGBA")
    assert image.size == mask.size == layer.size == (32, 32)
    assert set(np.unique(np.asarray(mask))) <= {0, 255}
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["strength"] == 0.8 and report["seed"] == 3 and report["timings"]["total_s"] > 0
    recipe = read_recipe(out)
    assert recipe["task"] == "edit" and recipe["region"] == "foreground" and recipe["image"] == str(image_path)
    assert main(["replay", str(out), "--quiet"]) == 0 and "identical to the source" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "out.layer.png"), "--quiet"]) == 0
    assert "identical to the source" in capsys.readouterr().out


def test_cli_refuses_bad_input_with_exit_2(tiny_model_dir, image_path, tmp_path, capsys):
    base = ["edit", str(image_path), "--model", str(tiny_model_dir), "--steps", str(STEPS), "--quiet"]
    same = [*base, "--source", SOURCE, "--target", SOURCE.upper(), "--output", str(tmp_path / "o.png")]
    assert main(same) == 2 and "--region" in capsys.readouterr().err
    over = [*base, "--source", SOURCE, "--target", TARGET, "--output", str(image_path)]
    assert main(over) == 2 and "never overwritten" in capsys.readouterr().err
    huge = tmp_path / "huge.png"
    Image.new("RGB", (2100, 8)).save(huge)
    args = ["edit", str(huge), "--source", SOURCE, "--target", TARGET, "--output", str(tmp_path / "h.png")]
    assert main([*args, "--model", str(tiny_model_dir)]) == 2
    assert "limit is 2048 pixels on a side" in capsys.readouterr().err


def _saved(tmp_path: Path, name: str, image: Image.Image, **save: object) -> Path:
    path = tmp_path / name
    image.save(path, **save)
    return path


def test_every_input_mode_comes_back_at_its_own_size(tiny_model, tmp_path):
    rgb = Image.fromarray(scene(61, 47))
    rotated = Image.fromarray(scene(20, 12))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    rgba = rgb.convert("RGBA")
    rgba.putalpha(128)
    inputs = {
        "odd 61x47": (_saved(tmp_path, "odd.png", rgb), (61, 47)),
        "RGBA": (_saved(tmp_path, "rgba.png", rgba), (61, 47)),
        "LA": (_saved(tmp_path, "la.png", rgb.convert("LA")), (61, 47)),
        "P": (_saved(tmp_path, "p.png", rgb.convert("P")), (61, 47)),
        "CMYK": (_saved(tmp_path, "cmyk.tif", rgb.convert("CMYK")), (61, 47)),
        "I;16": (
            _saved(tmp_path, "deep.png", Image.fromarray(np.full((47, 61), 40000, np.uint16))),
            (61, 47),
        ),
        "EXIF": (_saved(tmp_path, "exif.jpg", rotated, exif=exif), (12, 20)),
    }
    for name, (path, size) in inputs.items():
        result = edit(tiny_model, path, SOURCE, TARGET, region="global", strength=0.5, seed=0, steps=STEPS)
        assert result.image.size == result.mask.size == result.layer.size == size, name
        assert (result.report["input"]["width"], result.report["input"]["height"]) == size
        if name != "odd 61x47":
            assert result.report["input"]["notes"], name  # each conversion is written down
    assert Image.open(inputs["I;16"][0]).mode.startswith("I")  # the file kept its own mode


def test_batch_edit_task_writes_four_files_and_replays(tiny_model, image_path, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    job = {"id": "e1", "task": "edit", "image": str(image_path), "source": SOURCE, "target": TARGET}
    job |= {"seed": 5, "strength": 0.6, "steps": STEPS, "scheduler": "euler"}
    jobs.write_text(json.dumps(job) + "\n")
    summary = run_batch(jobs, tmp_path / "out", tiny_model)
    assert summary.failed == 0, summary.to_dict()
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["e1.json", "e1.layer.png", "e1.mask.png", "e1.png"]
    report = json.loads((out / "e1.json").read_text())
    assert report["region"] == "foreground" and report["timings"]["mask_s"] > 0 and report["timings"]["task_s"] > 0
    assert report["recipe"]["strength"] == 0.6 and report["recipe"]["scheduler"] == "euler"
    for name in ("e1.png", "e1.mask.png"):
        assert replay(out / name, tmp_path / f"replay-{name}", tiny_model).identical, name


def test_replay_refuses_a_changed_input(tiny_model, image_path, tmp_path):
    result = edit(tiny_model, image_path, SOURCE, TARGET, region="global", strength=0.5, seed=0, steps=STEPS)
    result.save(tmp_path / "out.png")
    Image.fromarray(scene()[::-1].copy()).save(image_path)
    with pytest.raises(RetouchError, match="changed since the recipe was written"):
        replay(tmp_path / "out.png", tmp_path / "again.png", tiny_model)
    with pytest.raises(RetouchError, match="refusing to overwrite the input"):
        result.save(image_path)


def test_auto_strength_keeps_a_trace(tiny_model):
    seen = []

    def judge(image: Image.Image) -> tuple[float, bool]:
        seen.append(image.size)
        took = len(seen) in (1, 3)  # takes at 1.0, fails next, takes after
        return float(took), took

    result = edit(tiny_model, scene(), SOURCE, TARGET, strength="auto", judge=judge, seed=0, steps=6, mask_config=FAST)
    trace = result.report["strength_search"]
    assert [t["took"] for t in trace] == [True, False, True] and trace[0]["strength"] == 1.0
    # 6 steps, bisected over 2..6 denoising steps: 6 takes, 4 does not, 5 takes
    assert result.report["strength"] == result.recipe["strength"] == trace[2]["strength"] == 0.9167
    assert seen == [(32, 32)] * 3


@pytest.mark.parametrize("method", ["sdedit", "diffedit"])
def test_other_methods_run(tiny_model, method):
    source = scene()
    result = edit(tiny_model, source, SOURCE, TARGET, method=method, seed=0, steps=STEPS, mask_config=FAST)
    assert result.image.size == (32, 32) and result.report["method"] == method
    if method == "sdedit":
        assert result.report["mask_area"] == 1.0 and result.report["region"] == "global"
    else:  # DiffEdit's own mask: the pixels outside it and its feather band are the input's
        mask = np.asarray(result.mask) == 255
        kept = feather_alpha(mask) == 0
        assert result.report["region"] == "mask" and 0 < result.report["mask_area"] < 1
        assert kept.sum() > 100 and np.array_equal(np.asarray(result.image)[kept], source[kept])
        assert result.report["metrics"]["outside"]["identical"]


def test_bad_arguments(tiny_model):
    with pytest.raises(RetouchError, match="needs --mask"):
        edit(tiny_model, scene(), SOURCE, TARGET, method="inpaint")
    with pytest.raises(RetouchError, match="strength must be in"):
        edit(tiny_model, scene(), SOURCE, TARGET, strength=1.5)
    with pytest.raises(RetouchError, match="runs no denoising step"):
        edit(tiny_model, scene(), SOURCE, TARGET, region="global", strength=0.1, steps=STEPS)
    with pytest.raises(RetouchError, match="name no change"):
        edit(tiny_model, scene(), SOURCE, SOURCE, mask_config=FAST)


def test_cli_global_edit_prints_no_psnr_outside_and_exits_0(tiny_model_dir, image_path, tmp_path, capsys):
    """A style edit's mask is the whole picture: no pixel lies outside it, so there is no PSNR."""
    out = tmp_path / "pastel.png"
    argv = ["edit", str(image_path), "--source", SOURCE, "--target", f"{SOURCE}, pastel", "--output", str(out)]
    assert main([*argv, "--model", str(tiny_model_dir), "--steps", str(STEPS), "--seed", "0", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "region global" in printed and "outside the mask and its feather band: n/a" in printed
    report = json.loads((tmp_path / "pastel.json").read_text())
    assert report["mask_area"] == 1.0 and report["metrics"]["outside"] == {
        "psnr": None, "ssim": None, "pixels": 0, "identical": False
    }
