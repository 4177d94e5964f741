"""`retouch interpolate`, `retouch style`, `generate --style`, their batch tasks and replays."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retouch.batch import replay, run_batch
from retouch.cli import main
from retouch.io.png import read_recipe, save_png
from retouch.models.tiny import save_tiny_pipeline

PROMPT = "a large red circle on a blue background, pastel"
CLIP = str(Path(__file__).parents[1] / "src" / "retouch" / "assets" / "shapes-64-clip")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(save_tiny_pipeline(tmp_path_factory.mktemp("model") / "tiny"))


def _run(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["--json", "--quiet", *argv]) == 0
    return json.loads(capsys.readouterr().out)


def _pixels(path: str | Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_interpolate_writes_frames_strip_and_gif(model_dir: str, tmp_path: Path, capsys) -> None:
    path = ["interpolate", "a red circle", "a green square", *"--frames 3 --seed 4 --steps 2".split()]
    out = _run(capsys, *path, "--model", model_dir, "--output", str(tmp_path))
    assert [Path(f).name for f in out["frames"]] == [f"00000-4-{k:02d}.png" for k in range(3)]
    assert Path(out["strip"]).name == "00000-4-strip.png"
    with Image.open(out["gif"]) as gif:
        assert gif.n_frames == 3
    frame = read_recipe(out["frames"][1])
    assert (frame["task"], frame["frame"], frame["prompt_b"]) == ("interpolate", 1, "a green square")
    result = replay(out["frames"][1], tmp_path / "replayed.png")
    assert result.identical

    locked = _run(capsys, *path, "--layout-steps", "1", "--model", model_dir, "--output", str(tmp_path / "locked"))
    assert read_recipe(locked["frames"][0])["layout_steps"] == 1
    assert not np.array_equal(_pixels(locked["frames"][0]), _pixels(out["frames"][0]))
    assert replay(locked["frames"][0], tmp_path / "locked-replayed.png").identical

    held = _run(capsys, *path, "--hold-common", "1", "--model", model_dir, "--output", str(tmp_path / "held"))
    assert read_recipe(held["frames"][2])["hold_common"] == 1.0
    assert np.array_equal(_pixels(held["frames"][0]), _pixels(out["frames"][0]))  # frame 0: A's own
    assert replay(held["frames"][2], tmp_path / "held-replayed.png").identical


def test_style_single_and_sweep(model_dir: str, tmp_path: Path, capsys) -> None:
    common = ["--seed", "4", "--steps", "2", "--model", model_dir, "--output", str(tmp_path)]
    single = _run(capsys, "style", PROMPT, "--style", "pastel", "--amount", "0.4", *common)
    recipe = read_recipe(single["files"][0])
    fields = (recipe["task"], recipe["style"], recipe["amount"], recipe["direction"])
    assert fields == ("style", "pastel", 0.4, "prompt")
    assert replay(single["files"][0], tmp_path / "replayed.png").identical

    sweep = _run(capsys, "style", PROMPT, "--style", "pastel", "--sweep=-0.2:0.2:3", *common)
    assert sweep["amounts"] == [-0.2, 0.0, 0.2]
    assert len(sweep["files"]) == 3 and Path(sweep["grid"]).name.endswith("-sweep.png")
    assert replay(sweep["grid"], tmp_path / "grid-replayed.png").identical

    plain = _run(capsys, "generate", PROMPT, *common)
    assert np.array_equal(_pixels(sweep["files"][1]), _pixels(plain["files"][0]))  # theta = 0
    styled = _run(capsys, "generate", PROMPT, "--style", "pastel", "--style-amount", "0.4", *common)
    assert np.array_equal(_pixels(styled["files"][0]), _pixels(single["files"][0]))
    assert styled["recipes"][0]["task"] == "style"
    old_flags = [
        ["style", PROMPT, "--style", "pastel", "--strength", "0.4"],
        ["generate", PROMPT, "--style", "pastel", "--style-strength", "0.4"],
    ]
    for argv in old_flags:
        old = _run(capsys, *argv, *common)
        assert np.array_equal(_pixels(old["files"][0]), _pixels(single["files"][0]))


def test_style_amount_auto_judged_by_a_clip_folder(model_dir: str, tmp_path: Path, capsys) -> None:
    from retouch.metrics.clip_score import bundled_clip_path

    common = ["--seed", "4", "--steps", "2", "--model", model_dir, "--output", str(tmp_path)]
    clip = str(bundled_clip_path())
    out = _run(capsys, "style", PROMPT, "--style", "pastel", "--amount", "auto", "--judge", clip, *common)
    report = out["report"]
    assert [row["amount"] for row in report["sweep"]] == [round(0.2 * i, 1) for i in range(11)]
    assert report["judge"].startswith("clip:") and report["amount"] == out["amounts"][0]
    assert read_recipe(out["files"][0])["amount"] == report["amount"]
    assert replay(out["files"][0], tmp_path / "replayed.png").identical
    assert main(["style", PROMPT, "--style", "pastel", "--amount", "0.2", "--judge", clip, *common]) == 2
    assert "--judge chooses the amount" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["style", PROMPT, "--style", "pastel", "--amount", "lots", *common])
    assert exit_info.value.code == 2 and "amount must be a number or 'auto'" in capsys.readouterr().err


def test_a_recipe_with_the_old_strength_key_replays(model_dir: str, tmp_path: Path, capsys) -> None:
    common = ["--seed", "4", "--steps", "2", "--model", model_dir, "--output", str(tmp_path)]
    single = _run(capsys, "style", PROMPT, "--style", "pastel", "--amount", "0.4", *common)
    image = Image.open(single["files"][0])
    recipe = read_recipe(single["files"][0])
    recipe["strength"] = recipe.pop("amount")  # as written before the rename
    save_png(image, tmp_path / "old.png", recipe)
    result = replay(tmp_path / "old.png", tmp_path / "old.replay.png")
    assert result.identical and result.recipe["amount"] == 0.4 and "strength" not in result.recipe


def test_bad_input_exits_2(model_dir: str, tmp_path: Path, capsys) -> None:
    common = ["--seed", "4", "--steps", "1", "--model", model_dir, "--output", str(tmp_path)]
    assert main(["style", PROMPT, "--style", "watercolor", *common]) == 2
    assert "'watercolor' is not in the prompt" in capsys.readouterr().err
    assert main(["interpolate", "a", "b", "--frames", "1", *common]) == 2
    assert "at least 2 frames" in capsys.readouterr().err
    assert main(["style", PROMPT, "--style", "pastel", "--sweep", "0:1", *common]) == 2
    assert main(["generate", PROMPT, "--style-strength", "0.3", *common]) == 2
    assert "--style-amount needs --style" in capsys.readouterr().err


def test_batch_tasks(model_dir: str, tmp_path: Path) -> None:
    jobs = [
        # "strength": the amount's old name
        dict(id="st", task="style", prompt=PROMPT, style="pastel", direction="phrase", strength=0.25, seed=3, steps=2),
        dict(id="it", task="interpolate", prompt_a="a red circle", prompt_b="a blue star", frames=3, seed=3, steps=2),
        dict(id="bad", task="style", prompt="a red circle", style="pastel", seed=3, steps=1),
        dict(id="auto", task="style", prompt=PROMPT, style="pastel", amount="auto", judge=CLIP, seed=3, steps=1),
        dict(id="badjudge", task="style", prompt=PROMPT, style="pastel", amount=0.2, judge=CLIP, seed=3, steps=1),
    ]
    jobs_file = tmp_path / "jobs.jsonl"
    jobs_file.write_text("\n".join(json.dumps(job) for job in jobs))
    out = tmp_path / "out"
    summary = run_batch(jobs_file, out, model_dir)
    assert (summary.count("ok"), summary.failed) == (3, 2)
    assert read_recipe(out / "st.png")["amount"] == 0.25
    auto = json.loads((out / "auto.json").read_text())
    assert read_recipe(out / "auto.png")["amount"] == auto["amount"] and len(auto["sweep"]) == 11
    assert replay(out / "auto.png", tmp_path / "auto-replayed.png").identical
    assert 'with "amount": "auto"' in json.loads((out / "badjudge.error.json").read_text())["error"]
    assert {p.name for p in out.glob("it*.png")} == {"it.png", "it_0.png", "it_1.png", "it_2.png"}
    report = json.loads((out / "it.json").read_text())
    assert report["images"] == ["it.png", "it_0.png", "it_1.png", "it_2.png"]
    assert report["ts"] == [0.0, 0.5, 1.0]
    assert read_recipe(out / "it_2.png")["frame"] == 2
    assert "'pastel' is not in the prompt" in json.loads((out / "bad.error.json").read_text())["error"]
    assert replay(out / "it_1.png", tmp_path / "frame.png").identical
