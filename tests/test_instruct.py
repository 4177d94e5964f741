"""`retouch instruct` (InstructPix2Pix) on a tiny random 8-channel model, its trainer on tiny
networks, and the shapes-64 instruction grammar."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STEPS
from diffusers import EulerDiscreteScheduler, StableDiffusionInstructPix2PixPipeline
from PIL import Image
from safetensors.torch import load_file

from retouch.batch import default_registry, replay, run_batch
from retouch.cli import main
from retouch.edit import instruct as instruct_module
from retouch.edit.instruct import instruct, preserve_mask
from retouch.errors import RetouchError
from retouch.io.png import read_recipe
from retouch.models.loading import load_model
from retouch.train.instruct import (
    InstructConfig,
    InstructTrainer,
    conditioning_dropout,
    emphasis_mask,
    export_checkpoint,
    extend_tokenizer,
    resize_token_embeddings,
    widen_conv_in,
)
from retouch.worlds import shapes64
from retouch.worlds import shapes64_instructions as grammar

INSTRUCTION = "make the square green"


def scene(width: int = 32, height: int = 32) -> np.ndarray:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:] = (40, 90, 220)
    pixels[8:20, 10:22] = (220, 40, 40)
    return pixels


@pytest.fixture(scope="module")
def instruct_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from retouch.models.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny-instruct", seed=1, in_channels=8)


@pytest.fixture(scope="module")
def instruct_model(instruct_dir: Path):
    return load_model(str(instruct_dir), device="cpu")


@pytest.fixture
def image_path(tmp_path: Path) -> Path:
    path = tmp_path / "in.png"
    Image.fromarray(scene()).save(path)
    return path


# ---- the pipeline --------------------------------------------------------------------------


@pytest.mark.parametrize("image_scale", [1.0, 1.5, 2.2])
def test_pixels_equal_diffusers_pipeline(instruct_model, image_scale):
    """The two-scale guidance (text, image, neither: three UNet branches) is diffusers' own."""
    pipe = instruct_model.pipe
    reference = StableDiffusionInstructPix2PixPipeline(
        vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer, unet=pipe.unet,
        scheduler=EulerDiscreteScheduler.from_config(pipe.scheduler.config), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    expected = reference(
        INSTRUCTION, image=Image.fromarray(scene()), num_inference_steps=STEPS, guidance_scale=3.0,
        image_guidance_scale=image_scale, generator=torch.Generator("cpu").manual_seed(5),
    ).images[0]
    result = instruct(instruct_model, scene(), INSTRUCTION, seed=5, steps=STEPS, guidance_scale=3.0,
                      image_guidance_scale=image_scale, scheduler="euler")
    assert np.array_equal(np.asarray(result.image), np.asarray(expected))
    assert result.recipe["image_guidance_scale"] == image_scale and result.report["region"] == "global"


def test_image_guidance_changes_the_picture(instruct_model):
    a = instruct(instruct_model, scene(), INSTRUCTION, seed=2, steps=STEPS, image_guidance_scale=1.0)
    b = instruct(instruct_model, scene(), INSTRUCTION, seed=2, steps=STEPS, image_guidance_scale=2.0)
    assert not np.array_equal(np.asarray(a.image), np.asarray(b.image))


def test_pipeline_is_kept_per_sampler_and_rebuilt_when_a_component_changes(instruct_dir):
    """The second call reuses the pipeline (and gives the same pixels); another sampler or a
    swapped component builds a new one."""
    model = load_model(str(instruct_dir), device="cpu")
    first = instruct_module.instruct_pipeline(model, "euler")
    assert instruct_module.instruct_pipeline(model, "euler") is first
    assert instruct_module.instruct_pipeline(model, "ddim") is not first
    a = instruct(model, scene(), INSTRUCTION, seed=3, steps=STEPS)
    b = instruct(model, scene(), INSTRUCTION, seed=3, steps=STEPS)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image))
    model.pipe.unet = copy.deepcopy(model.pipe.unet)
    rebuilt = instruct_module.instruct_pipeline(model, "euler")
    assert rebuilt is not first and rebuilt.unet is model.pipe.unet


def test_odd_sizes_and_modes_come_back_at_their_own_size(instruct_model):
    grey = Image.fromarray(scene(27, 30)[..., 0])  # L mode, 27 x 30: padded to 28 x 32 and cropped back
    result = instruct(instruct_model, grey, INSTRUCTION, seed=0, steps=STEPS)
    assert result.image.size == (27, 30) and result.report["input"]["padded_to"] == [28, 32]
    assert result.report["input"]["mode"] == "L"


def test_four_channel_model_and_empty_instruction_are_refused(tiny_model, instruct_model):
    with pytest.raises(RetouchError, match="not an instruct model.*4 input channels"):
        instruct(tiny_model, scene(), INSTRUCTION, seed=0, steps=STEPS)
    for empty in ("", "   "):
        with pytest.raises(RetouchError, match="instruction is empty"):
            instruct(instruct_model, scene(), empty, seed=0, steps=STEPS)
    with pytest.raises(RetouchError, match="image_guidance_scale"):
        instruct(instruct_model, scene(), INSTRUCTION, seed=0, steps=STEPS, image_guidance_scale=0.5)


# ---- preserve ------------------------------------------------------------------------------


def _recolour(source: np.ndarray) -> np.ndarray:
    """What an instruct model does to ``scene()`` for "make the square green": the square
    recoloured, every other pixel off by a little (the VAE's round trip)."""
    rng = np.random.default_rng(0)
    edited = source.astype(np.int16) + rng.integers(-4, 5, source.shape)
    edited[8:20, 10:22] = (50, 170, 70)
    return np.clip(edited, 0, 255).astype(np.uint8)


def test_preserve_keeps_every_pixel_outside_bit_for_bit(instruct_model, monkeypatch):
    monkeypatch.setattr(instruct_module, "run_pipeline", lambda pipe, job, padded: _recolour(padded))
    source = scene()
    plain = instruct(instruct_model, source, INSTRUCTION, seed=0, steps=STEPS)
    kept = instruct(instruct_model, source, INSTRUCTION, seed=0, steps=STEPS, preserve=True)
    output, alpha = np.asarray(kept.image), np.asarray(kept.layer)[..., 3]
    outside = alpha == 0
    assert kept.report["region"] == "foreground" and outside.sum() > 0.5 * outside.size
    assert np.array_equal(output[outside], source[outside])
    assert not np.array_equal(np.asarray(plain.image)[outside], source[outside])  # without: changed
    mask = np.asarray(kept.mask) == 255
    assert mask[8:20, 10:22].all() and np.array_equal(output[9:19, 11:21], _recolour(source)[9:19, 11:21])
    assert kept.report["metrics"]["outside"]["identical"] and kept.recipe["preserve"] is True


def test_preserve_regions():
    source = scene()
    background = source.copy()
    background[:] = (50, 170, 70)
    background[8:20, 10:22] = (220, 40, 40)
    region, mask = preserve_mask(source, background, 4)
    assert region == "background" and not mask[8:20, 10:22].any() and mask.mean() > 0.8
    drifted = background.copy()
    drifted[8:20, 10:22] = (190, 70, 60)  # the object moved by 30, the background by 150: it drifted
    region, mask = preserve_mask(source, drifted, 4)
    assert region == "background" and not mask[8:20, 10:22].any() and mask.mean() > 0.8
    recoloured = background.copy()
    recoloured[8:20, 10:22] = (130, 110, 40)  # moved by 90, more than 0.45 of 150: a global change
    assert preserve_mask(source, recoloured, 4)[0] == "global"
    region, mask = preserve_mask(source, 255 - source, 4)
    assert region == "global" and mask.all()
    region, mask = preserve_mask(source, source, 4)
    assert region == "none" and not mask.any()


# ---- recipes, replay, batch, CLI -------------------------------------------------------------


def test_cli_writes_four_files_and_replay_is_bit_for_bit(instruct_dir, image_path, tmp_path, capsys):
    out = tmp_path / "out.png"
    argv = ["instruct", str(image_path), INSTRUCTION, "--output", str(out), "--model", str(instruct_dir),
            "--steps", str(STEPS), "--seed", "3", "--image-guidance-scale", "1.7", "--preserve", "--quiet"]
    assert main(argv) == 0
    for name in ("out.png", "out.mask.png", "out.layer.png", "out.json"):
        assert (tmp_path / name).is_file(), name
    recipe = read_recipe(out)
    assert recipe["task"] == "instruct" and recipe["instruction"] == INSTRUCTION and recipe["seed"] == 3
    assert recipe["image_guidance_scale"] == 1.7 and recipe["preserve"] is True
    capsys.readouterr()
    assert main(["replay", str(out), "--quiet"]) == 0 and "identical to the source" in capsys.readouterr().out
    assert main(["replay", str(tmp_path / "out.mask.png"), "--quiet"]) == 0
    assert "identical to the source" in capsys.readouterr().out


def test_cli_takes_an_embedding_and_replay_reapplies_it(instruct_dir, image_path, tmp_path, capsys):
    from safetensors.torch import save_file

    width = load_model(str(instruct_dir), "cpu").pipe.text_encoder.get_input_embeddings().weight.shape[1]
    embedding = tmp_path / "learned_embeds.safetensors"
    save_file({"<thing>": torch.randn(width, generator=torch.Generator().manual_seed(0))}, embedding)
    out = tmp_path / "out.png"
    argv = ["instruct", str(image_path), "make the <thing> red", "--output", str(out), "--model", str(instruct_dir),
            "--steps", str(STEPS), "--seed", "3", "--embedding", str(embedding), "--quiet"]
    assert main(argv) == 0
    adapters = read_recipe(out)["adapters"]
    assert [(a["kind"], a["tokens"]) for a in adapters] == [("embedding", ["<thing>"])]
    assert len(adapters[0]["sha256"]) == 64
    capsys.readouterr()
    assert main(["replay", str(out), "--quiet"]) == 0 and "identical to the source" in capsys.readouterr().out
    save_file({"<thing>": torch.zeros(width)}, embedding)  # changed since: replay refuses
    assert main(["replay", str(out), "--quiet"]) == 2 and "sha256" in capsys.readouterr().err


def test_cli_refuses_four_channel_model_and_empty_instruction(tiny_model_dir, instruct_dir, image_path, tmp_path,
                                                              capsys):
    def run(instruction: str, model: Path) -> int:
        return main(["instruct", str(image_path), instruction, "--output", str(tmp_path / "o.png"),
                     "--model", str(model), "--steps", "1", "--quiet"])

    assert run(INSTRUCTION, tiny_model_dir) == 2 and "not an instruct model" in capsys.readouterr().err
    assert run(" ", instruct_dir) == 2 and "instruction is empty" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_batch_task_writes_files_and_replays(instruct_model, image_path, tmp_path):
    jobs = tmp_path / "jobs.jsonl"
    job = {"id": "i1", "task": "instruct", "image": str(image_path), "instruction": INSTRUCTION, "seed": 4,
           "steps": STEPS, "preserve": True}
    jobs.write_text(json.dumps(job) + "\n")
    out = tmp_path / "out"
    summary = run_batch(jobs, out, instruct_model)
    assert summary.failed == 0
    for name in ("i1.png", "i1.mask.png", "i1.layer.png"):
        assert replay(out / name, tmp_path / f"replay-{name}", instruct_model).identical, name


def test_batch_check_refuses_bad_jobs_without_a_model():
    registry = default_registry()
    good = {"task": "instruct", "image": "x.png", "instruction": INSTRUCTION}
    registry.check(good)
    for bad, match in [({"instruction": ""}, "empty"), ({"preserve": "yes"}, "preserve"),
                       ({"image_guidance_scale": 0.2}, "image_guidance_scale"), ({"strength": 0.5}, "unknown")]:
        with pytest.raises(RetouchError, match=match):
            registry.check({**good, **bad})
    with pytest.raises(RetouchError, match="needs a 'instruction'|needs an 'instruction'"):
        registry.check({"task": "instruct", "image": "x.png"})


def test_batch_of_instruct_jobs_defaults_to_the_instruct_model():
    from retouch.batch.runner import Job, default_model

    assert default_model([Job(1, "a", {"task": "instruct"})]) == "shapes-64-instruct"
    assert default_model([Job(1, "a", {"task": "instruct"}), Job(2, "b", {"prompt": "x"})]) == "shapes-64"


# ---- training ------------------------------------------------------------------------------


def test_conditioning_dropout_modes():
    p = torch.tensor([0.0, 0.049, 0.05, 0.099, 0.1, 0.149, 0.15, 0.9])
    text, image = conditioning_dropout(p, 0.05)
    assert text.tolist() == [True, True, True, True, False, False, False, False]
    assert image.tolist() == [False, False, True, True, True, True, False, False]
    text, image = conditioning_dropout(torch.rand(200_000, generator=torch.Generator().manual_seed(0)), 0.05)
    shares = [(text & ~image).float().mean(), (text & image).float().mean(), (~text & image).float().mean()]
    assert all(abs(float(s) - 0.05) < 0.003 for s in shares)


def test_loss_emphasis_weights_the_smaller_part():
    rng = np.random.default_rng(2)
    pairs = [shapes64.sample_edit(rng, kind) for kind in ("background", "background", "color", "style")]
    assert {p.source.size for p in pairs if p.kind == "background"} == {"small", "large"}  # both sizes checked
    regions = torch.from_numpy(np.stack([p.mask for p in pairs]).astype(np.float32))
    edit, smaller = emphasis_mask(regions, 16, "edit"), emphasis_mask(regions, 16, "smaller")
    for pair, e, s in zip(pairs, edit, smaller, strict=True):
        if pair.kind == "background":  # the object that must survive gets the weight, not the background
            obj = torch.from_numpy(pair.source.coverage() >= 1.0).float()[None]  # the pixels it keeps
            assert torch.equal(s, emphasis_mask(obj, 16, "edit")[0])
            assert s.mean() < 0.5 < e.mean()
        else:  # a recolour's object, a global edit's whole picture: as before
            assert torch.equal(s, e)
    with pytest.raises(ValueError, match="loss_emphasis"):
        InstructConfig(loss_emphasis="object")


def test_widened_unet_starts_as_the_base(tiny_model):
    unet = tiny_model.pipe.unet
    wide = widen_conv_in(unet)
    assert wide.config.in_channels == 8 and torch.equal(wide.conv_in.weight[:, :4], unet.conv_in.weight)
    assert not wide.conv_in.weight[:, 4:].any()
    g = torch.Generator().manual_seed(0)
    x, picture = torch.randn(1, 4, 16, 16, generator=g), torch.randn(1, 4, 16, 16, generator=g)
    hidden = torch.randn(1, 77, 32, generator=g)
    with torch.no_grad():
        base = unet(x, 10, hidden).sample
        widened = wide(torch.cat([x, picture], dim=1), 10, hidden).sample
    assert torch.allclose(base, widened, atol=1e-6)


def test_tokenizer_gains_words_and_old_captions_encode_the_same(tiny_model, tmp_path):
    pipe = tiny_model.pipe
    caption = "a small red square on a blue background"
    with torch.no_grad():
        before = pipe.text_encoder(pipe.tokenizer(caption, return_tensors="pt").input_ids)[0]
    new = extend_tokenizer(pipe.tokenizer, list(grammar.INSTRUCTION_WORDS), tmp_path / "tok")
    grown = resize_token_embeddings(copy.deepcopy(pipe.text_encoder), pipe.tokenizer, new, seed=0)
    with torch.no_grad():
        after = grown(new(caption, return_tensors="pt").input_ids)[0]
    assert torch.allclose(before, after, atol=1e-6)  # old words keep their rows, whatever their new ids
    assert all(len(new.tokenize(word)) == 1 for word in grammar.INSTRUCTION_WORDS)
    rows = grown.get_input_embeddings().weight
    make, bigger = new.convert_tokens_to_ids(["make</w>", "bigger</w>"])
    assert rows.shape[0] == len(new) == grown.config.vocab_size and not torch.equal(rows[make], rows[bigger])


class _Triplets:
    """Fixed random 32 x 32 triplets for the trainer's tests."""

    resolution = 32

    def sample_triplets(self, rng: np.random.Generator, n: int):
        sources = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        regions = np.zeros((n, 32, 32), dtype=np.float32)
        regions[:, 8:20, 8:20] = 1.0
        texts = [str(rng.choice(["make the square red", "make it bigger"])) for _ in range(n)]
        return sources, texts, 255 - sources, regions

    def vocabulary(self) -> list[str]:
        return [*grammar.INSTRUCTION_WORDS, "square", "red"]


def _train(folder: Path, base: Path, crash_at: int | None = None) -> Path:
    config = InstructConfig(base=str(base), num_triplets=16, steps=4, batch_size=2, checkpoint_every=2,
                            warmup_steps=1)
    trainer = InstructTrainer(config, folder, log=lambda m: None, quiet=True)
    if crash_at is not None:
        loss = trainer.instruct_loss

        def crashing(step, *args):
            if step == crash_at:
                raise KeyboardInterrupt("killed")
            return loss(step, *args)

        trainer.instruct_loss = crashing  # type: ignore[method-assign]
    return trainer.run(_Triplets())


def test_resume_after_a_crash_equals_an_uninterrupted_run(tiny_model_dir, tmp_path):
    whole = _train(tmp_path / "whole", tiny_model_dir)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "split", tiny_model_dir, crash_at=3)
    assert (tmp_path / "split" / "work" / "checkpoints" / "instruct" / "step-2").is_dir()
    early = load_model(str(export_checkpoint(tmp_path / "split", tmp_path / "early", log=lambda m: None)), "cpu")
    assert early.pipe.unet.config.in_channels == 8
    split = _train(tmp_path / "split", tiny_model_dir)
    a, b = load_file(whole / "work" / "instruct.safetensors"), load_file(split / "work" / "instruct.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    model = load_model(str(whole), device="cpu")
    assert model.pipe.unet.config.in_channels == 8 and model.defaults["image_guidance_scale"] == 1.5
    result = instruct(model, scene(), "make the square red", seed=0, steps=STEPS)
    assert result.image.size == (32, 32)


def test_an_instruct_base_is_trained_further_not_widened(instruct_dir, tmp_path):
    """``--base`` may be an instruct model (8 channels): it starts as it is; drawing pictures for
    ``--data generated`` needs a text-to-image base, and says so."""
    base = load_model(str(instruct_dir), device="cpu")
    before = copy.deepcopy(base.pipe.unet.state_dict())
    trainer = InstructTrainer(InstructConfig(base=str(instruct_dir)), tmp_path / "probe", log=lambda m: None)
    tokenizer = extend_tokenizer(base.pipe.tokenizer, _Triplets().vocabulary(), tmp_path / "tokenizer")
    unet, _ = trainer.instruct_models(base, tokenizer)
    assert unet.config.in_channels == 8 and all(torch.equal(v, before[k]) for k, v in unet.state_dict().items())
    further = load_model(str(_train(tmp_path / "further", instruct_dir)), device="cpu")
    assert further.pipe.unet.config.in_channels == 8
    assert not torch.equal(further.pipe.unet.conv_in.weight, before["conv_in.weight"])
    generated = InstructTrainer(InstructConfig(base=str(instruct_dir), data="generated"), tmp_path / "g",
                                log=lambda m: None)
    with pytest.raises(ValueError, match="text-to-image"):
        generated.registered_source(base)


# ---- the grammar ---------------------------------------------------------------------------


@pytest.mark.distributed
def test_accelerate_launch_trains_on_two_cpu_processes(tiny_model_dir, tmp_path):
    """`accelerate launch` (torchrun; gloo, since there is no GPU) runs the instruct trainer on two
    processes, each taking half of every batch; the main process logs and exports the model."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), "-m", "retouch", "--quiet", "train", "instruct",
               "--base", str(tiny_model_dir), "--output", str(out), "--steps", "2", "--batch-size", "4",
               "--num-triplets", "8"]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "work" / "instruct_log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["processes"]) for r in rows] == [(1, 2), (2, 2)]  # logged once, by the main process
    assert load_model(str(out), device="cpu").pipe.unet.config.in_channels == 8


def test_grammar_round_trip_every_kind_and_phrasing():
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    for i in range(200):
        kind = grammar.KINDS[i % len(grammar.KINDS)]
        pair, text = grammar.sample_instruction(rng, kind)
        back = grammar.parse_instruction(text, pair.source)
        assert back is not None and (back.kind, back.target) == (pair.kind, pair.target), text
        seen.add(" ".join(w for w in text.split() if w in grammar.INSTRUCTION_WORDS + ("a", "background")))
    assert len(seen) >= 12  # every template's fixed words turn up


def test_grammar_names_no_edit_when_the_spec_says_so():
    scene_ = shapes64.Scene("blue", "red", "circle", "small", 20, 20)
    for text in ["make the square green", "make the circle red", "make it smaller", "make it plain",
                 "make the background red", "make the background blue", "paint it black", "make it a circle"]:
        assert grammar.parse_instruction(text, scene_) is None, text
    assert grammar.scene_after(scene_, "make it bigger") == shapes64.Scene("blue", "red", "circle", "large", 12, 12)
    assert grammar.instruction_captions("turn the circle into a square", scene_.caption()) == (
        scene_.caption(), "a small red square on a blue background")
    assert grammar.instruction_captions("make it pastel", "not a caption") is None


def test_cli_train_instruct_on_the_world(tiny_model_dir, tmp_path, monkeypatch, capsys):
    import retouch.train.data

    monkeypatch.setattr(retouch.train.data, "registered_sources",
                        lambda: {"shapes64-instructions": grammar.Shapes64Instructions})
    out = tmp_path / "run"
    argv = ["train", "instruct", "--base", str(tiny_model_dir), "--output", str(out), "--data",
            "shapes64-instructions", "--steps", "2", "--batch-size", "2", "--num-triplets", "4", "--quiet", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["recipe"]["steps"] == 2
    tokenizer = load_model(str(out), device="cpu").pipe.tokenizer
    assert all(len(tokenizer.tokenize(word)) == 1 for word in ("bigger", "replace", "pastel", "triangle"))
    assert main(argv) == 2 and "--resume" in capsys.readouterr().err
    other = ["train", "instruct", "--base", str(tiny_model_dir), "--output", str(tmp_path / "other"), "--data",
             "nothing", "--steps", "2", "--quiet"]
    assert main(other) == 2 and "nothing" in capsys.readouterr().err


def test_instruct_sweep_plots_directional_against_image_similarity(instruct_dir, image_path, tmp_path, capsys):
    out = tmp_path / "sweep"
    args = ["evaluate", "--instruct-sweep", "--image", str(image_path), "--instruction", INSTRUCTION,
            "--image-guidance-scales", "1.0,2.2", "--steps", "2", "--model", str(instruct_dir), "--out", str(out),
            "--quiet"]
    captions = ["--source", "a small red square on a blue background",
                "--target", "a small green square on a blue background"]
    assert main([*args, *captions]) == 0
    rows = json.loads((out / "instruct_sweep.json").read_text())["rows"]
    assert [row["image_guidance_scale"] for row in rows] == [1.0, 2.2]
    assert all(-1 <= row["directional_similarity"] <= 1 and -1 <= row["image_similarity"] <= 1 for row in rows)
    assert rows[0]["image_similarity"] != rows[1]["image_similarity"]
    assert (out / "instruct_image_guidance.png").is_file() and (out / "instruct_2.20.png").is_file()
    assert main([*args, *captions[:2]]) == 2 and "--target" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # below 1: argparse refuses it
        main([*args[:7], "0.5", *args[8:]])


def test_bundled_instruct_model_is_the_default(image_path, tmp_path):
    from retouch.models.loading import DEFAULT_INSTRUCT_MODEL

    model = load_model(DEFAULT_INSTRUCT_MODEL, "cpu")
    assert model.source == "bundled" and model.pipe.unet.config.in_channels == 8
    assert model.defaults["image_guidance_scale"] == 1.5
    out = tmp_path / "o.png"
    assert main(["instruct", str(image_path), "make the square green", "--output", str(out), "--steps", "2",
                 "--seed", "0", "--quiet"]) == 0
    assert read_recipe(out)["model"] == DEFAULT_INSTRUCT_MODEL
