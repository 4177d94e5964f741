"""load_model: every --model form, and a clear error for every way it can be wrong."""

from __future__ import annotations

import shutil
import time

import numpy as np
import pytest
import torch
from ldm_checkpoint import save_ldm_checkpoint

from retouch.core.generate import generate
from retouch.errors import RetouchError
from retouch.models import loading
from retouch.models.loading import load_model, resolve_dtype


def same_pixels(a, b) -> bool:
    settings = {"prompt": "a red circle", "seed": 1, "steps": 1, "scheduler": "ddim"}
    return np.array_equal(
        np.asarray(generate(a, **settings).images[0]), np.asarray(generate(b, **settings).images[0])
    )


def test_diffusers_folder(tiny_model, tiny_model_dir):
    assert tiny_model.source == "folder" and tiny_model.name == str(tiny_model_dir.resolve())
    assert tiny_model.device == torch.device("cpu") and tiny_model.dtype == torch.float32


def test_bundled_model_when_installed(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(loading, "bundled_model_path", lambda name="shapes-64": tiny_model_dir)
    model = load_model("shapes-64", device="cpu")
    assert (model.name, model.source) == ("shapes-64", "bundled")


def test_bundled_model_not_installed_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "bundled_model_path", lambda name="shapes-64": tmp_path / "shapes-64")
    with pytest.raises(RetouchError, match="bundled model 'shapes-64' is not installed.*--model PATH"):
        load_model("shapes-64")


def test_bundled_model_path_is_inside_the_package():
    path = loading.bundled_model_path()
    assert path.parts[-3:] == ("retouch", "assets", "shapes-64")


def test_dtype_override(tiny_model_dir):
    model = load_model(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and model.pipe.text_encoder.dtype == torch.bfloat16
    with pytest.raises(RetouchError, match="unknown dtype 'float8'"):
        resolve_dtype("float8")


@pytest.mark.parametrize("model", ["missing-folder/", "./nope", "no/such/path/model", "justaname"])
def test_missing_paths(model):
    with pytest.raises(RetouchError, match="model not found"):
        load_model(model)


def test_folder_without_model_index(tmp_path):
    with pytest.raises(RetouchError, match="not a diffusers model folder"):
        load_model(str(tmp_path))


def test_folder_with_missing_component(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "m")
    shutil.rmtree(broken / "unet")
    with pytest.raises(RetouchError, match="incomplete.*'unet'"):
        load_model(str(broken))


def test_folder_with_empty_weights(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "m")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    with pytest.raises(RetouchError, match=r"diffusion_pytorch_model.safetensors is empty \(0 bytes\)"):
        load_model(str(broken))


def test_folder_with_corrupt_weights(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "m")
    weights = broken / "vae" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(RetouchError, match="cannot load the diffusers folder.*corrupt"):
        load_model(str(broken))


def test_single_safetensors_file_with_config(tiny_model, tiny_model_dir, tmp_path):
    path = save_ldm_checkpoint(tiny_model.pipe, tmp_path / "tiny.safetensors")
    model = load_model(str(path), device="cpu", config=str(tiny_model_dir))
    assert model.source == "single-file" and model.config == str(tiny_model_dir.resolve())
    assert same_pixels(model, tiny_model)


def test_single_file_without_config_offline_says_pass_config(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = save_ldm_checkpoint(tiny_model.pipe, tmp_path / "tiny.safetensors")
    with pytest.raises(RetouchError, match="cannot reach the Hugging Face hub. Pass --config FOLDER"):
        load_model(str(path))


def test_single_file_config_must_be_a_diffusers_folder(tiny_model, tmp_path):
    path = save_ldm_checkpoint(tiny_model.pipe, tmp_path / "tiny.safetensors")
    with pytest.raises(RetouchError, match="is not a diffusers folder"):
        load_model(str(path), config=str(tmp_path))


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_empty_model_file(tmp_path, suffix):
    (tmp_path / f"m{suffix}").write_bytes(b"")
    with pytest.raises(RetouchError, match=r"empty \(0 bytes\)"):
        load_model(str(tmp_path / f"m{suffix}"))


def test_corrupt_safetensors(tmp_path):
    (tmp_path / "m.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00garbage!garbage!")
    with pytest.raises(RetouchError, match="not a valid .safetensors file"):
        load_model(str(tmp_path / "m.safetensors"))


def test_corrupt_ckpt(tmp_path):
    (tmp_path / "m.ckpt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(RetouchError, match="not a readable PyTorch checkpoint"):
        load_model(str(tmp_path / "m.ckpt"))


class Payload:
    """Stands in for any pickled Python object: unpickling it would run code."""


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, tmp_path / "m.ckpt")
    with pytest.raises(
        RetouchError, match=r"(?i)refusing to unpickle .*m\.ckpt.*convert it to \.safetensors"
    ):
        load_model(str(tmp_path / "m.ckpt"))


def test_tensor_only_ckpt_loads(tiny_model, tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    state = load_file(save_ldm_checkpoint(tiny_model.pipe, tmp_path / "tiny.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "tiny.ckpt")
    model = load_model(str(tmp_path / "tiny.ckpt"), device="cpu", config=str(tiny_model_dir))
    assert model.source == "single-file"


def test_unsupported_file_type(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(RetouchError, match="unsupported model file"):
        load_model(str(tmp_path / "m.onnx"))


def test_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(RetouchError, match="runwayml/stable-diffusion-v1-5.*--model /path/to/folder"):
        load_model("runwayml/stable-diffusion-v1-5")
    assert time.perf_counter() - start < 10


def test_hf_hub_offline_is_honoured(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not loading.hub_is_reachable()
    with pytest.raises(RetouchError, match="offline"):
        load_model("owner/model")


def test_model_recommended_guidance_scale_is_the_default(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "retouch.json").write_text('{"guidance_scale": 3.0, "steps": 25}')
    model = load_model(str(folder), device="cpu")
    settings = {"prompt": "a red circle", "seed": 1, "steps": 1, "scheduler": "ddim"}
    assert generate(model, **settings).recipes[0]["guidance_scale"] == 3.0
    assert generate(model, **settings, guidance_scale=5.0).recipes[0]["guidance_scale"] == 5.0
    assert load_model(str(tiny_model_dir), device="cpu").guidance_scale() == 7.5  # none recommended


@pytest.mark.parametrize("text", ["{not json", '{"guidance_scale": "high"}', "[4.0]"])
def test_bad_model_defaults_file_is_refused(tiny_model_dir, tmp_path, text):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "retouch.json").write_text(text)
    with pytest.raises(RetouchError, match="retouch.json"):
        load_model(str(folder), device="cpu")
