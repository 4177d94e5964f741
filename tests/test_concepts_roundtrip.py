"""A concept trained by ``retouch train`` is used by ``--concept`` on another command, recorded in
the PNG's recipe with its sha256, and replays bit for bit: the trainers' files and the loaders
agree on one format."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from PIL import Image

from retouch.cli import main
from retouch.io.png import read_recipe


@pytest.mark.parametrize("method", ["textual-inversion", "lora", "custom-diffusion"])
def test_trained_concept_generates_and_replays(tiny_model_dir, tmp_path, monkeypatch, method):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        Image.new("RGB", (32, 32), (200, 40 * i, 30)).save(tmp_path / "imgs" / f"{i}.png")
    model = str(tiny_model_dir)
    extra = ["--init-word", "circle"] if method == "textual-inversion" else []
    extra += ["--class-word", "circle", "--num-class-images", "2"] if method == "custom-diffusion" else []
    assert main(["--quiet", "train", method, "--images", "imgs", "--token", "<star>", "--output", "concept",
                 "--steps", "2", "--model", model, *extra]) == 0  # fmt: skip
    prompt = "a large red <star> on a blue background"
    assert main(["--quiet", "generate", prompt, "--steps", "2", "--width", "32", "--height", "32", "--seed", "3",
                 "--output", "out", "--model", model, "--concept", "concept"]) == 0  # fmt: skip
    picture = next(Path("out").glob("*.png"))
    adapters = read_recipe(picture)["adapters"]
    recorded = [(Path(record["path"]), record["sha256"]) for record in adapters if Path(record["path"]).is_file()]
    assert recorded and all(path.resolve().is_relative_to(Path("concept").resolve()) for path, _ in recorded)
    for path, digest in recorded:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert main(["--quiet", "replay", str(picture), "--output", "again.png"]) == 0
    assert list(Image.open("again.png").getdata()) == list(Image.open(picture).convert("RGB").getdata())
