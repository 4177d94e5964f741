"""The CLI: help, --json, exit codes, and errors without tracebacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import STEPS

from retouch.cli import main
from retouch.io.images import load_image
from retouch.io.png import read_recipe


@pytest.mark.parametrize(
    "argv", [["--help"], ["generate", "--help"], ["replay", "--help"], ["batch", "--help"]]
)
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert "usage: retouch" in capsys.readouterr().out


def generate_json(capsys, tiny_model_dir, out, *extra: str) -> dict:
    argv = [
        "--json",
        "--quiet",
        "generate",
        "a red circle",
        "--model",
        str(tiny_model_dir),
        "--steps",
        str(STEPS),
    ]
    assert main([*argv, "--output", str(out), *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_generate_json_and_files(tiny_model_dir, tmp_path, capsys):
    payload = generate_json(
        capsys, tiny_model_dir, tmp_path, "--seed", "5", "--num-images", "2", "--scheduler", "ddim"
    )
    assert payload["seeds"] == [5, 6]
    assert payload["files"] == [str(tmp_path / "00000-5.png"), str(tmp_path / "00001-6.png")]
    assert read_recipe(payload["files"][1]) == payload["recipes"][1]
    again = generate_json(capsys, tiny_model_dir, tmp_path, "--seed", "5")  # numbering continues
    assert again["files"] == [str(tmp_path / "00002-5.png")]
    assert len(again["timings"]["generate_s"]) == 1 and again["timings"]["load_s"] > 0


def test_flags_after_the_subcommand(tiny_model_dir, tmp_path, capsys):
    argv = ["generate", "x", "--model", str(tiny_model_dir), "--steps", "1", "--output", str(tmp_path)]
    assert main([*argv, "--json", "--quiet", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == [1]


def test_replay_cli_is_bit_for_bit(tiny_model_dir, tmp_path, capsys):
    source = generate_json(capsys, tiny_model_dir, tmp_path, "--seed", "3")["files"][0]
    assert main(["--json", "--quiet", "replay", source, "--output", str(tmp_path / "again.png")]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["identical"] is True
    assert np.array_equal(np.asarray(load_image(source)), np.asarray(load_image(tmp_path / "again.png")))


def test_unknown_scheduler_exits_2_with_message(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "x", "--scheduler", "k_euler"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'k_euler'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["generate", "x", "--model", "/no/such/model"], "error: model not found"),
        (["replay", "/no/such.png"], "error: image not found"),
        (["batch", "/no/jobs.jsonl", "--out", "out"], "error: jobs file not found"),
    ],
)
def test_bad_input_exits_2_without_traceback(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


def test_batch_exit_codes_and_json(tiny_model_dir, tmp_path, capsys):
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(json.dumps({"id": "a", "prompt": "x", "steps": 1, "seed": 1}) + "\n")
    argv = [
        "--json",
        "--quiet",
        "batch",
        str(jobs),
        "--out",
        str(tmp_path / "out"),
        "--model",
        str(tiny_model_dir),
    ]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 1
    jobs.write_text(jobs.read_text() + '{"id": "b", "prompt": "x", "steps": -1}\n')
    assert main(argv) == 1
    payload = json.loads(capsys.readouterr().out)
    assert (payload["skipped"], payload["failed"]) == (1, 1)
