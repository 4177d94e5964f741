"""Personalization training: every method trains 2 steps on a tiny random model, its files load in
plain diffusers (a subprocess that never imports retouch) with the same pixels as retouch's own
in-memory model; resume after a crash or ``kill -9`` ends with the same weights; bad input is refused."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from concept_cases import CASES, draw_plain, write_pictures
from safetensors.torch import load_file

from retouch.core.generate import generate
from retouch.errors import RetouchError
from retouch.models.loading import load_model
from retouch.train.concept import ConceptSettings
from retouch.train.concept_merge import merged_weight
from retouch.train.personalize import personalize

PROMPT = "a <star> on a red background"


def settings(tmp: Path, **changes) -> ConceptSettings:
    base = {"steps": 2, "lr": 1e-2, "batch_size": 2, "num_class_images": 2, "class_steps": 2,
            "class_images_dir": str(tmp / "class-images")}
    return ConceptSettings(**{**base, **changes})


def draw(model) -> np.ndarray:
    image = generate(model, PROMPT, seed=0, steps=2, scheduler="ddim", guidance_scale=7.5).images[0]
    return np.asarray(image)


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """Every case trained 2 steps: name -> (folder, retouch's in-memory picture)."""
    tmp = tmp_path_factory.mktemp("concepts")
    pictures = write_pictures(tmp / "pictures", 4)
    out = {}
    for name, (method, options) in CASES.items():
        model = load_model(str(tiny_model_dir), device="cpu")
        result = personalize(model, method, [pictures], ["<star>"], tmp / name, class_words=["cross"],
                             settings=settings(tmp), **options)
        out[name] = (result.folder, draw(result.model))
    return out


@pytest.fixture(scope="module")
def plain_pictures(trained, tiny_model_dir, tmp_path_factory):
    """The same pictures drawn by plain diffusers from the saved files, in one subprocess."""
    jobs = [{"name": name, "base": str(tiny_model_dir), "concept": str(folder), "prompt": PROMPT}
            for name, (folder, _) in trained.items()]
    return draw_plain(jobs, tmp_path_factory.mktemp("plain"))


@pytest.mark.parametrize("name", list(CASES))
def test_artifact_loads_in_plain_diffusers_with_retouchs_pixels(name, trained, plain_pictures, tiny_model_dir):
    folder, in_memory = trained[name]
    manifest = json.loads((folder / "concept.json").read_text())
    assert manifest["format"] == 1 and manifest["method"] == CASES[name][0] and manifest["tokens"] == ["<star>"]
    assert len(manifest["base_model_sha256"]) == 64 and all((folder / f).exists() for f in manifest["files"].values())
    assert (folder / "loss.png").is_file() and not (folder / "checkpoints").exists()
    np.testing.assert_array_equal(plain_pictures[name], in_memory)
    if f"{name}-kohya" in plain_pictures:  # the kohya copy (A1111, ComfyUI) draws the same
        np.testing.assert_array_equal(plain_pictures[f"{name}-kohya"], in_memory)
    base = draw(load_model(str(tiny_model_dir), device="cpu"))
    assert not np.array_equal(base, in_memory)  # the concept changes the picture


def test_file_formats_are_the_ecosystems(trained):
    ti = load_file(trained["textual-inversion"][0] / "learned_embeds.safetensors")
    assert list(ti) == ["<star>"] and ti["<star>"].shape == (2, 32)  # two vectors: <star>, <star>_1
    a1111 = load_file(trained["textual-inversion"][0] / "star.safetensors")
    assert torch.equal(a1111["emb_params"], ti["<star>"])
    kohya = load_file(trained["lora"][0] / "lora_kohya.safetensors")
    assert any(k.startswith("lora_unet_") for k in kohya) and any(k.startswith("lora_te_") for k in kohya)
    assert all(kohya[k.split(".")[0] + ".alpha"] == 4 for k in kohya if k.endswith("lora_down.weight"))
    custom = load_file(trained["custom-diffusion"][0] / "pytorch_custom_diffusion_weights.safetensors")
    assert custom and all("attn2.processor.to_" in k and "_custom_diffusion.weight" in k for k in custom)
    assert (trained["dreambooth"][0] / "model" / "model_index.json").is_file()


def test_conv_lora_adapts_the_convolutions_and_feed_forwards_in_every_format(trained):
    """``conv=True`` (LoCon): adapters beyond attention, in diffusers' file and the kohya copy."""
    folder = trained["dreambooth-lora"][0]
    assert json.loads((folder / "concept.json").read_text())["settings"]["conv"] is True
    diffusers_keys = list(load_file(folder / "pytorch_lora_weights.safetensors"))
    kohya = load_file(folder / "lora_kohya.safetensors")
    for layer in ("resnets.0.conv1", "resnets.0.conv2", "proj_in", "ff.net.0.proj", "ff.net.2", "attn1.to_q"):
        assert any(k.startswith("unet.") and layer in k for k in diffusers_keys), layer
        assert any(k.startswith("lora_unet_") and layer.replace(".", "_") in k for k in kohya), layer
    conv_down = [v for k, v in kohya.items() if k.endswith("resnets_0_conv1.lora_down.weight")]
    assert conv_down and all(v.dim() == 4 and v.shape[-2:] == (3, 3) for v in conv_down)
    plain_lora = list(load_file(trained["lora"][0] / "pytorch_lora_weights.safetensors"))
    assert not any("resnets" in k or "ff.net" in k for k in plain_lora)  # attention only by default


def test_retouch_loads_a_conv_lora_as_it_was_trained(trained, tiny_model_dir):
    """``--concept`` and ``--lora`` (the kohya copy, with the token's embedding) give the pixels
    of the in-memory model that trained the LoCon adapters."""
    from retouch.models.adapters import apply_adapters

    folder, in_memory = trained["dreambooth-lora"]
    concept = apply_adapters(load_model(str(tiny_model_dir), device="cpu"), concepts=[folder])
    np.testing.assert_array_equal(draw(concept), in_memory)
    files = json.loads((folder / "concept.json").read_text())["files"]
    base = load_model(str(tiny_model_dir), device="cpu")
    embedding, lora = str(folder / files["embeddings"]), str(folder / files["lora_kohya"])
    kohya = apply_adapters(base, embeddings=[embedding], loras=[lora])
    np.testing.assert_array_equal(draw(kohya), in_memory)


def test_gradient_checkpointing_trains_the_same_weights(tiny_model_dir, tmp_path):
    pictures = write_pictures(tmp_path / "pictures", 3)
    weights = []
    for checkpointing in (False, True):
        model = load_model(str(tiny_model_dir), device="cpu")
        run = settings(tmp_path, num_class_images=0, gradient_checkpointing=checkpointing)
        during = []  # whether the UNet checkpoints its activations while it trains

        def step(done: int, loss: float, unet=model.pipe.unet, during=during) -> None:
            during.append(unet.is_gradient_checkpointing)

        result = personalize(model, "lora", [pictures], ["<star>"], tmp_path / f"gc-{checkpointing}", settings=run,
                             conv=True, on_step=step)
        assert during == [checkpointing] * run.steps
        assert not model.pipe.unet.is_gradient_checkpointing  # switched off again after training
        weights.append(load_file(result.folder / "pytorch_lora_weights.safetensors"))
    assert weights[0].keys() == weights[1].keys()
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert any(not torch.equal(v, 0 * v) for k, v in weights[0].items() if "lora_B" in k or "lora.up" in k)


def test_a_dreambooth_model_keeps_its_bases_sampling_defaults(tiny_model_dir, tmp_path):
    """The base's retouch.json (guidance, steps) goes with the whole model DreamBooth writes, so
    ``--concept OUT`` draws with the settings the base recommends, not the library's fallbacks."""
    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    defaults = {"guidance_scale": 3.0, "steps": 3}
    (base / "retouch.json").write_text(json.dumps(defaults))
    pictures = write_pictures(tmp_path / "pictures", 3)
    run = settings(tmp_path, steps=1, num_class_images=0)
    for name, folder in (("with", base), ("without", tiny_model_dir)):
        result = personalize(load_model(str(folder), device="cpu"), "dreambooth", [pictures], ["<star>"],
                             tmp_path / name, settings=run)
        saved = load_model(str(result.folder / "model"), device="cpu")
        assert saved.defaults == (defaults if name == "with" else {})
        assert saved.guidance_scale() == (3.0 if name == "with" else 7.5)


def test_the_token_is_added_to_the_word_level_tokenizer_never_unknown(tmp_path):
    """On the bundled shapes-64 model's word-level tokenizer the token gets its own new id."""
    from retouch.train.finetune import add_token

    model = load_model("shapes-64", device="cpu")
    pipe, before = model.pipe, len(model.pipe.tokenizer)
    unknown = pipe.tokenizer("a <star>", add_special_tokens=False).input_ids
    ids = add_token(pipe, "<star>", torch.zeros(2, pipe.text_encoder.config.hidden_size))
    assert ids == [before, before + 1] and len(pipe.tokenizer) == before + 2
    assert pipe.text_encoder.get_input_embeddings().weight.shape[0] == before + 2
    text = pipe.maybe_convert_prompt("a large red <star> on a blue background", pipe.tokenizer)
    got = pipe.tokenizer(text, add_special_tokens=False).input_ids
    assert got[3:5] == ids and len(got) == 9 and unknown != got[:2]
    with pytest.raises(RetouchError, match="already in this model's tokenizer"):
        add_token(pipe, "<star>", torch.zeros(1, pipe.text_encoder.config.hidden_size))


@pytest.mark.parametrize("method", ["lora", "custom-diffusion", "textual-inversion"])
def test_resume_after_a_crash_gives_the_weights_of_an_uninterrupted_run(method, tiny_model_dir, tmp_path, monkeypatch):
    pictures = write_pictures(tmp_path / "pictures", 3)
    run = settings(tmp_path, steps=4, checkpoint_every=2)

    def train(output, resume=False):
        model = load_model(str(tiny_model_dir), device="cpu")
        return personalize(model, method, [pictures], ["<star>"], output, class_words=["cross"], settings=run,
                           resume=resume)

    whole = train(tmp_path / "whole")
    crash = {"steps": 0}
    original = torch.optim.Adam.step

    def crashing_step(self, *args, **kwargs):
        crash["steps"] += 1
        if crash["steps"] == 3:  # after the checkpoint at step 2
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", crashing_step)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "crashed")
    monkeypatch.setattr(torch.optim.Adam, "step", original)
    with pytest.raises(RetouchError, match="--resume"):
        train(tmp_path / "crashed")
    resumed = train(tmp_path / "crashed", resume=True)
    assert resumed.manifest["figures"]["resumed_at_step"] == 2 and resumed.losses == whole.losses
    for role, file in whole.manifest["files"].items():
        if file.endswith(".safetensors"):
            a, b = load_file(tmp_path / "whole" / file), load_file(tmp_path / "crashed" / file)
            assert all(torch.equal(a[k], b[k]) for k in a), role


def test_resume_after_kill_9_of_the_cli(tiny_model_dir, tmp_path):
    pictures = write_pictures(tmp_path / "pictures", 3)
    argv = ["train", "lora", "--images", str(pictures), "--token", "<star>", "--steps", "40", "--checkpoint-every",
            "2", "--lr", "0.01", "--batch-size", "1", "--model", str(tiny_model_dir), "--device", "cpu", "--quiet",
            "--conv", "--gradient-checkpointing"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "retouch", *argv, "--output", str(killed)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (killed / "checkpoints" / "latest").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "concept.json").exists(), "the run ended before it could be killed"
    from retouch.cli import main

    assert main([*argv, "--output", str(killed), "--resume"]) == 0
    assert main([*argv, "--output", str(tmp_path / "whole")]) == 0
    for file in ("pytorch_lora_weights.safetensors", "learned_embeds.safetensors"):
        a, b = load_file(killed / file), load_file(tmp_path / "whole" / file)
        assert all(torch.equal(a[k], b[k]) for k in a)
    manifest = json.loads((killed / "concept.json").read_text())
    assert manifest["figures"]["resumed_at_step"] > 0
    assert manifest["settings"]["conv"] is True and manifest["settings"]["gradient_checkpointing"] is True


@pytest.mark.distributed
def test_accelerate_launch_trains_a_concept_on_two_cpu_processes(tiny_model_dir, tmp_path):
    """torchrun with two gloo CPU processes: each takes half of every batch, the gradients are
    averaged, the class images are drawn once (main process first) and the main process writes
    the files, which plain loading reads."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    pictures, out = write_pictures(tmp_path / "pictures", 3), tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "-m", "retouch", "--quiet", "train", "dreambooth",
               "--images", str(pictures), "--token", "<star>", "--class-word", "cross", "--steps", "2",
               "--batch-size", "2", "--num-class-images", "2", "--class-images-dir", str(tmp_path / "class"),
               "--model", str(tiny_model_dir), "--output", str(out)]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "concept.json").read_text())
    assert manifest["figures"]["processes"] == 2 and manifest["settings"]["steps"] == 2
    assert len(list((tmp_path / "class").rglob("*.png"))) == 2  # drawn once, not once per process
    assert load_model(str(out / manifest["files"]["model"]), device="cpu").pipe.unet is not None


def test_class_images_are_generated_by_the_base_model_once_and_cached(tiny_model, tmp_path):
    from retouch.train.concept_prior import class_images

    first, captions = class_images(tiny_model, ["a cross"], 2, 2, tmp_path)
    files = sorted(tmp_path.rglob("*.png"))
    stamps = [f.stat().st_mtime_ns for f in files]
    again, _ = class_images(tiny_model, ["a cross"], 3, 2, tmp_path)
    assert len(files) == 2 and np.array_equal(again[:2], first) and len(again) == 3 and captions == ["a cross"] * 2
    assert [f.stat().st_mtime_ns for f in files] == stamps  # read back, not drawn again
    expected = generate(tiny_model, "a cross", seed=1, steps=2).images[0]
    assert np.array_equal(first[1], np.asarray(expected))
    _, cycled = class_images(tiny_model, ["a cross", "a square"], 3, 2, tmp_path)
    assert cycled == ["a cross", "a square", "a cross"]


def test_merge_keeps_each_concepts_constraints_and_the_rest_near_the_base():
    generator = torch.Generator().manual_seed(0)
    w0 = torch.randn(8, 16, generator=generator, dtype=torch.float64)
    c = torch.randn(5, 16, generator=generator, dtype=torch.float64)  # constraint rows
    c_reg = torch.randn(40, 16, generator=generator, dtype=torch.float64)
    target = torch.randn(8, 16, generator=generator, dtype=torch.float64)
    merged = merged_weight(w0, c, c @ target.T, c_reg)
    torch.testing.assert_close(merged @ c.T, target @ c.T)  # eq. 4's constraint: C W^T = V
    torch.testing.assert_close(merged_weight(w0, c, c @ w0.T, c_reg), w0)  # nothing learned: the base


def test_merge_constrains_each_concepts_token_rows_only(tiny_model_dir):
    from retouch.train.concept_merge import caption_features
    from retouch.train.finetune import add_token

    model = load_model(str(tiny_model_dir), device="cpu")  # its own copy: a token is added
    dim = model.pipe.text_encoder.get_input_embeddings().weight.shape[1]
    add_token(model.pipe, "<a>", torch.randn(2, dim, generator=torch.Generator().manual_seed(0)))
    captions = ["a red <a> on a blue background", "a small <a>", "a red circle"]
    token_ids = model.pipe.tokenizer.convert_tokens_to_ids(["<a>", "<a>_1"])
    expected = []  # each caption's rows (one per position from its start token) where the token's ids stand
    for caption in captions:
        ids = model.pipe.tokenizer(model.pipe.maybe_convert_prompt(caption, model.pipe.tokenizer)).input_ids
        every = caption_features(model, [caption])
        expected += [every[p] for p, i in enumerate(ids) if i in token_ids]
    rows = caption_features(model, captions, ["<a>"])
    assert len(expected) == 4  # the token's two vectors in the two captions that hold it
    torch.testing.assert_close(rows, torch.stack(expected), rtol=0, atol=0)


def test_merge_cli_writes_a_concept_plain_diffusers_loads(tiny_model_dir, tmp_path):
    from retouch.cli import main

    pictures = write_pictures(tmp_path / "pictures", 3)
    base = ["--images", str(pictures), "--class-word", "cross", "--steps", "2", "--model", str(tiny_model_dir),
            "--device", "cpu", "--quiet", "--batch-size", "1"]
    for token in ("a", "b"):
        output = str(tmp_path / token)
        assert main(["train", "custom-diffusion", "--token", f"<{token}>", "--output", output, *base]) == 0
    assert main(["concept", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--output", str(tmp_path / "ab"),
                 "--model", str(tiny_model_dir), "--quiet"]) == 0
    manifest = json.loads((tmp_path / "ab" / "concept.json").read_text())
    assert manifest["tokens"] == ["<a>", "<b>"] and manifest["method"] == "custom-diffusion"
    assert manifest["settings"]["constraints"] == "token rows"
    embeds = load_file(tmp_path / "ab" / "learned_embeds.safetensors")
    assert set(embeds) == {"<a>", "<b>"}
    assert main(["concept", "merge", str(tmp_path / "a"), str(tmp_path / "a"), "--output", str(tmp_path / "x")]) == 2


def test_bad_inputs_are_refused_with_a_clear_message(tiny_model, tmp_path):
    def run(folder, tokens=("<star>",), method="textual-inversion", output=None, **kw):
        folders = [folder] * len(tokens)
        return personalize(tiny_model, method, folders, list(tokens), output or tmp_path / "out", **kw)

    with pytest.raises(RetouchError, match="holds 2 pictures; a concept is taught from 3 to 20"):
        run(write_pictures(tmp_path / "two", 2))
    with pytest.raises(RetouchError, match="holds 21 pictures"):
        run(write_pictures(tmp_path / "many", 21))
    meta = write_pictures(tmp_path / "meta", 3)
    rows = [{"file_name": f"{i}.png", "text": "a red <star>" if i else "a red square"} for i in range(3)]
    (meta / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(RetouchError, match=r"metadata.jsonl:1: the caption 'a red square' does not contain"):
        run(meta)
    rows[0] = {"file_name": "gone.png", "text": "a <star>"}
    (meta / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(RetouchError, match="gone.png is listed in metadata.jsonl but does not exist"):
        run(meta)
    three = write_pictures(tmp_path / "three", 3)
    with pytest.raises(RetouchError, match="angle brackets"):
        run(three, tokens=("star",))
    with pytest.raises(RetouchError, match="several .* need custom-diffusion"):
        run(three, tokens=("<a>", "<b>"))
    with pytest.raises(RetouchError, match="no such folder"):
        run(tmp_path / "missing")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(RetouchError, match="is not empty"):
        run(three, output=tmp_path / "full")
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(RetouchError, match="--steps and --batch-size"):
        run(three, settings=ConceptSettings(steps=0))
    with pytest.raises(RetouchError, match="--num-vectors"):
        run(three, num_vectors=0)
    with pytest.raises(RetouchError, match="one token"):
        run(three, init_word="notaword")
    with pytest.raises(RetouchError, match="--conv .* needs --lora"):
        run(three, method="dreambooth", conv=True)


def test_cli_refuses_bad_input_with_exit_code_2(tiny_model_dir, tmp_path, capsys):
    from retouch.cli import main

    code = main(["train", "dreambooth", "--images", str(write_pictures(tmp_path / "p", 2)), "--token", "<x>",
                 "--output", str(tmp_path / "o"), "--model", str(tiny_model_dir), "--device", "cpu"])
    assert code == 2 and "holds 2 pictures" in capsys.readouterr().err
