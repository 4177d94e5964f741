"""`retouch train model` on tiny networks: the output loads in plain diffusers, a kill -9 resumes
to the same weights, and two CPU processes under `accelerate launch` train together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file
from transformers import CLIPTokenizer

from retouch.cli import main
from retouch.errors import RetouchError
from retouch.train.ldm import (
    LDMConfig,
    Trainer,
    _latent_mask,
    foreground_weights,
    min_snr_weights,
    reconstruction_loss,
)
from retouch.worlds import shapes64
from retouch.worlds.shapes64_data import Shapes64Source

TINY = {
    "vae_channels": [8, 8, 8], "vae_steps": 4, "vae_batch_size": 4, "vae_crop": 16, "num_latents": 64,
    "decoder_steps": 2, "decoder_batch_size": 2, "decoder_edge_weight": 10.0,
    "text_hidden": 16, "text_layers": 1, "text_heads": 2, "unet_channels": [8, 16, 16], "unet_heads": 2,
    "unet_steps": 6, "unet_batch_size": 4, "checkpoint_every": 2, "warmup_steps": 2,
    "unet_text_time_embedding": True, "min_snr_gamma": 5.0, "foreground_loss_share": 0.5,
}


@pytest.fixture
def recipe(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def test_train_model_writes_a_diffusers_folder(recipe: Path, tmp_path: Path, capsys):
    out = tmp_path / "model"
    assert main(["--quiet", "train", "model", "--recipe", str(recipe), "--output", str(out)]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(out)  # plain diffusers, no retouch code
    tokenizer = CLIPTokenizer.from_pretrained(out / "tokenizer")
    assert tokenizer.tokenize("a large red circle on an orange background, pastel") == [
        w + "</w>" for w in "a large red circle on an orange background , pastel".split()
    ]
    image = pipe("a small blue square on a red background", num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.shape == (64, 64, 3)
    assert pipe.vae.config.scaling_factor != 0.18215  # measured on the pre-encoded latents
    assert (out / "training_curves.png").stat().st_size > 1000
    assert json.loads((out / "recipe.json").read_text())["unet_steps"] == 6
    # a second run into the same folder needs --resume
    assert main(["train", "model", "--recipe", str(recipe), "--output", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err
    _decoder_on_a_base(out, tmp_path, capsys)


def _decoder_on_a_base(base: Path, tmp_path: Path, capsys) -> None:
    """A recipe with ``base`` fine-tunes that model's decoder alone: everything else stays bit for bit."""
    staged = {**TINY, "base": str(base), "vae_steps": 0, "unet_steps": 0, "decoder_steps": 2, "decoder_lr": 0.01}
    (tmp_path / "staged.json").write_text(json.dumps(staged))
    (base / "retouch.json").write_text(json.dumps({"guidance_scale": 7.5, "steps": 30}))  # the base's own defaults
    out = tmp_path / "sharpened"
    assert main(["--quiet", "train", "model", "--recipe", str(tmp_path / "staged.json"), "--output", str(out)]) == 0
    for part in ("unet/diffusion_pytorch_model", "text_encoder/model"):
        new, old = load_file(out / f"{part}.safetensors"), load_file(base / f"{part}.safetensors")
        assert new.keys() == old.keys() and all(torch.equal(new[k], old[k]) for k in old), part
    assert json.loads((out / "retouch.json").read_text()) == {"guidance_scale": 7.5, "steps": 30}
    new, old = (load_file(m / "vae/diffusion_pytorch_model.safetensors") for m in (out, base))
    assert all(torch.equal(new[k], old[k]) for k in old if k.startswith(("encoder.", "quant_conv.")))
    assert not all(torch.equal(new[k], old[k]) for k in old if k.startswith("decoder."))
    schedulers = [(m / "scheduler/scheduler_config.json").read_text() for m in (out, base)]
    assert schedulers[0] == schedulers[1]
    (tmp_path / "staged.json").write_text(json.dumps({**staged, "unet_steps": 6}))
    assert main(["train", "model", "--recipe", str(tmp_path / "staged.json"), "--output", str(tmp_path / "x")]) == 2
    assert "decoder alone" in capsys.readouterr().err


def test_kill_9_then_resume_gives_the_same_weights(recipe: Path, tmp_path: Path):
    straight = tmp_path / "straight"
    assert main(["--quiet", "train", "model", "--recipe", str(recipe), "--output", str(straight)]) == 0

    crashed = tmp_path / "crashed"
    cmd = [sys.executable, "-m", "retouch", "--quiet", "train", "model", "--recipe", str(recipe),
           "--output", str(crashed)]
    proc = subprocess.Popen(cmd, env=_env())
    latest = crashed / "work" / "checkpoints" / "ldm" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert latest.exists(), "the run ended before its first LDM checkpoint"
    assert not (crashed / "work" / "ldm.safetensors").exists()

    resumed = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "ldm: resumed at step" in resumed.stdout
    a, b = load_file(straight / "work" / "ldm.safetensors"), load_file(crashed / "work" / "ldm.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_accelerate_launch_two_cpu_processes(recipe: Path, tmp_path: Path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "retouch", "--quiet", "train", "model", "--recipe", str(recipe), "--output", str(out)]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "model_index.json").exists()
    rows = [json.loads(line) for line in (out / "work" / "ldm_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))  # logged once, by the main process
    StableDiffusionPipeline.from_pretrained(out)


def test_imagefolder_and_fashion_mnist_sources(tmp_path: Path):
    import gzip

    import numpy as np
    from PIL import Image

    from retouch.train.data import fashion_mnist_source, imagefolder_source

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(3):
        scene = shapes64.sample_scene(rng)
        Image.fromarray(scene.render()).resize((80, 60)).save(folder / f"{i}.png")
        rows.append(json.dumps({"file_name": f"{i}.png", "text": scene.caption()}))
    (folder / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    source = imagefolder_source(folder, resolution=32)
    images, captions = source.sample(rng, 5)
    assert images.shape == (5, 32, 32, 3) and all(c in [json.loads(r)["text"] for r in rows] for c in captions)

    fm = tmp_path / "fm"
    fm.mkdir()
    pixels = rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)
    header = b"\x00\x00\x08\x03" + b"".join(int(n).to_bytes(4, "big") for n in pixels.shape)
    (fm / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + pixels.tobytes()))
    labels = np.array([7, 0, 9, 3], dtype=np.uint8)
    (fm / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (4).to_bytes(4, "big")
                                                                  + labels.tobytes()))
    source = fashion_mnist_source(fm, resolution=32)
    assert source.images.shape == (4, 32, 32, 3)
    assert source.captions == ["a photo of a sneaker", "a photo of a t-shirt", "a photo of an ankle boot",
                               "a photo of a dress"]
    with pytest.raises(FileNotFoundError, match="Fashion-MNIST"):
        fashion_mnist_source(tmp_path / "nowhere")


def test_min_snr_weights():
    snr = torch.tensor([0.0, 1.0, 5.0, 20.0])
    v = min_snr_weights(snr, 5.0, "v_prediction")
    eps = min_snr_weights(snr, 5.0, "epsilon")
    assert torch.allclose(v, torch.tensor([1.0, 0.5, 5 / 6, 5 / 21]))
    assert torch.allclose(eps, torch.tensor([1.0, 1.0, 1.0, 0.25]))  # 1 at snr 0: no 0/0


def test_reconstruction_loss_weighs_colour_edges():
    x = torch.full((1, 3, 8, 8), -0.5)
    x[:, 0, 2:6, 2:6] = 0.5  # a red square: its edge pixels are those within one pixel of its border
    flat_error, edge_error = torch.zeros_like(x), torch.zeros_like(x)
    flat_error[:, :, 0, 0] = 0.2  # a corner far from the square
    edge_error[:, :, 2, 2] = 0.2  # the square's own corner
    assert torch.equal(reconstruction_loss(x + flat_error, x), reconstruction_loss(x + edge_error, x))
    assert torch.allclose(
        reconstruction_loss(x + flat_error, x), torch.nn.functional.l1_loss(x + flat_error, x)
        + torch.nn.functional.mse_loss(x + flat_error, x)
    )
    flat, edge = reconstruction_loss(x + flat_error, x, 10.0), reconstruction_loss(x + edge_error, x, 10.0)
    assert torch.isclose(edge / flat, torch.tensor(11.0))  # the same error costs 1 + 10 times more on an edge
    with pytest.raises(RetouchError, match="decoder_edge_weight"):
        LDMConfig(decoder_edge_weight=-1.0).check()


def test_foreground_weights_give_the_object_its_share():
    mask = torch.zeros(3, 16, 16)
    mask[0, 2:7, 2:7] = 1.0  # a small object: 25 of 256 cells
    mask[1, :, :8] = 1.0  # half the picture
    weights = foreground_weights(mask, 0.5)
    assert torch.allclose(weights.mean(dim=(1, 2)), torch.ones(3))
    inside = (weights * mask).sum(dim=(1, 2)) / weights.sum(dim=(1, 2))
    assert torch.allclose(inside[:2], torch.tensor([0.5, 0.5]))
    assert weights[0, 3, 3] > 4 * weights[0, 12, 12]  # the small object's cells weigh far more
    assert torch.equal(weights[2], torch.ones(16, 16))  # no object: uniform


def test_foreground_masks_follow_the_same_draws_as_the_pictures():
    source = Shapes64Source()
    images, captions = source.sample(np.random.default_rng(3), 6)
    images2, captions2, coverage = source.sample_with_foreground(np.random.default_rng(3), 6)
    assert np.array_equal(images, images2) and captions == captions2
    cells = _latent_mask(torch.from_numpy(coverage), 16)
    assert cells.shape == (6, 16, 16) and float(cells.max()) == 1.0
    small = [i for i, c in enumerate(captions) if " small " in c]
    large = [i for i, c in enumerate(captions) if " large " in c]
    assert all((cells[i] > 0).sum() < (cells[j] > 0).sum() for i in small for j in large)


def test_foreground_share_needs_a_source_with_objects(tmp_path: Path):
    from retouch.train.data import FixedSource

    config = LDMConfig(data="imagefolder", data_dir=str(tmp_path), foreground_loss_share=0.5)
    source = FixedSource(np.zeros((2, 64, 64, 3), np.uint8), ["a", "b"])
    with pytest.raises(ValueError, match="foreground_loss_share needs a data source"):
        Trainer(config, tmp_path).encode_latents(source, None)
