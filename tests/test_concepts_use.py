"""Using concepts: embeddings, LoRAs, Custom Diffusion and DreamBooth folders in every command,
recorded with their sha256 in each recipe, replayed bit for bit, refused when changed."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import STEPS
from PIL import Image
from safetensors.torch import save_file

from retouch.core.generate import generate
from retouch.errors import RetouchError
from retouch.models.adapter_options import take_lora_tags
from retouch.models.adapters import adapters_applied, apply_adapters
from retouch.models.loading import load_model
from retouch.models.tiny import save_tiny_pipeline, tiny_pipeline

WIDTH = 32  # the tiny text encoder's hidden size
PROMPT = "a large red <star> on a blue background"


def write_concept(folder: Path, method: str, tokens: list[str], files: dict[str, str]) -> Path:
    """A ``concept.json`` as ``retouch train`` writes it."""
    concept = {
        "format": 1, "method": method, "tokens": tokens, "class_word": None, "base_model": "tiny",
        "base_model_sha256": "0" * 64, "settings": {}, "created": "2026-12-04T00:00:00Z", "figures": {},
        "files": files,
    }
    (folder / "concept.json").write_text(json.dumps(concept))
    return folder


def random_embeddings(folder: Path, token: str = "<star>", vectors: int = 2, seed: int = 0) -> Path:
    """A Textual Inversion concept: diffusers' file and an A1111 copy (``emb_params``)."""
    folder.mkdir(parents=True, exist_ok=True)
    weights = torch.randn(vectors, WIDTH, generator=torch.Generator().manual_seed(seed))
    save_file({token: weights}, folder / "learned_embeds.safetensors")
    save_file({"emb_params": weights}, folder / "star.safetensors")
    files = {"embeddings": "learned_embeds.safetensors", "embeddings_a1111": "star.safetensors"}
    return write_concept(folder, "textual-inversion", [token], files)


def random_lora(folder: Path, seed: int = 0) -> Path:
    """A LoRA concept trained nowhere: peft adapters with random B, saved by diffusers'
    ``save_lora_weights``, plus a kohya-key copy."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers, convert_state_dict_to_kohya
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    pipe = tiny_pipeline()
    torch.manual_seed(seed)
    pipe.unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_k", "to_q", "to_v", "to_out.0"]))
    # out_proj too: diffusers 0.42 reads a kohya text-encoder LoRA only when it has out_proj keys
    text_modules = ["q_proj", "k_proj", "v_proj", "out_proj"]
    pipe.text_encoder.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=text_modules))
    with torch.no_grad():
        for module in (pipe.unet, pipe.text_encoder):
            for name, parameter in module.named_parameters():
                if "lora_B" in name:
                    parameter.normal_(0, 0.5)
    unet, text = get_peft_model_state_dict(pipe.unet), get_peft_model_state_dict(pipe.text_encoder)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=convert_state_dict_to_diffusers(unet),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(text),
        safe_serialization=True,
    )
    peft = {**{f"unet.{k}": v for k, v in unet.items()}, **{f"text_encoder.{k}": v for k, v in text.items()}}
    kohya = {k.replace("lora_te1_", "lora_te_"): v for k, v in convert_state_dict_to_kohya(peft).items()}
    save_file(kohya, folder / "star_kohya.safetensors")
    files = {"lora": "pytorch_lora_weights.safetensors", "lora_kohya": "star_kohya.safetensors"}
    return write_concept(folder, "lora", ["<star>"], files)


def random_custom_diffusion(folder: Path) -> Path:
    """Custom Diffusion: random K/V processors saved by ``unet.save_attn_procs``, and the token."""
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    random_embeddings(folder, seed=3)
    unet = tiny_pipeline().unet
    torch.manual_seed(1)
    processors = {}
    for name in unet.attn_processors:
        layer = unet.get_submodule(name.removesuffix(".processor"))
        cross = name.endswith("attn2.processor")
        processors[name] = CustomDiffusionAttnProcessor(
            train_kv=cross, train_q_out=False, hidden_size=layer.to_k.out_features,
            cross_attention_dim=unet.config.cross_attention_dim if cross else None,
        )
        with torch.no_grad():
            for parameter in processors[name].parameters():
                parameter.normal_(0, 0.3)
    unet.set_attn_processor(processors)
    weights = "pytorch_custom_diffusion_weights.safetensors"
    unet.save_attn_procs(folder, weight_name=weights, safe_serialization=True)
    files = {"custom_diffusion": weights, "embeddings": "learned_embeds.safetensors"}
    return write_concept(folder, "custom-diffusion", ["<star>"], files)


def random_dreambooth(folder: Path) -> Path:
    """DreamBooth: a whole model (here another random tiny one) in ``model/``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_tiny_pipeline(folder / "model", seed=5)
    return write_concept(folder, "dreambooth", ["<star>"], {"model": "model"})


BUILDERS = {
    "textual-inversion": random_embeddings,
    "lora": random_lora,
    "custom-diffusion": random_custom_diffusion,
    "dreambooth": random_dreambooth,
}


@pytest.fixture(scope="module")
def concepts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("concepts")
    return {method: build(root / method) for method, build in BUILDERS.items()}


def fresh(tiny_model_dir: Path):
    return load_model(str(tiny_model_dir), device="cpu")


@pytest.fixture
def model(tiny_model_dir):
    """A fresh load per test: adapters change the pipeline in place."""
    return fresh(tiny_model_dir)


def pixels(model, prompt: str = PROMPT, seed: int = 3) -> np.ndarray:
    return np.asarray(generate(model, prompt, seed=seed, steps=STEPS).images[0])


@pytest.mark.parametrize("method", list(BUILDERS))
def test_each_kind_loads_and_changes_the_picture(model, concepts, method):
    base = pixels(model)
    used = apply_adapters(model, concepts=[concepts[method]])
    changed = pixels(used)
    assert np.abs(changed.astype(int) - base.astype(int)).max() > 10
    kinds = {"textual-inversion": ["embedding"], "lora": ["lora"], "dreambooth": ["model"],
             "custom-diffusion": ["embedding", "custom_diffusion"]}[method]
    assert [record["kind"] for record in used.adapters] == kinds
    assert all(len(record["sha256"]) == 64 for record in used.adapters)
    assert generate(used, PROMPT, seed=3, steps=STEPS).recipes[0]["adapters"] == used.adapters


def test_embedding_tokens_join_the_tokenizer(model, concepts):
    used = apply_adapters(model, embeddings=[str(concepts["textual-inversion"] / "learned_embeds.safetensors")])
    assert used.adapters[0]["tokens"] == ["<star>"]
    assert "<star>" in used.pipe.tokenizer.get_vocab() and "<star>_1" in used.pipe.tokenizer.get_vocab()


def test_a1111_embedding_equals_the_diffusers_one(tiny_model_dir, concepts):
    folder = concepts["textual-inversion"]
    diffusers_format = apply_adapters(fresh(tiny_model_dir), embeddings=[str(folder / "learned_embeds.safetensors")])
    a1111 = apply_adapters(fresh(tiny_model_dir), embeddings=[f"{folder / 'star.safetensors'}:<star>"])
    assert np.array_equal(pixels(diffusers_format), pixels(a1111))
    assert a1111.adapters[0]["tokens"] == ["<star>"]


def test_kohya_lora_equals_the_diffusers_one(tiny_model_dir, concepts):
    folder = concepts["lora"]
    plain = apply_adapters(fresh(tiny_model_dir), loras=[str(folder / "pytorch_lora_weights.safetensors")])
    kohya = apply_adapters(fresh(tiny_model_dir), loras=[str(folder / "star_kohya.safetensors")])
    assert np.array_equal(pixels(plain, "a red circle"), pixels(kohya, "a red circle"))


def test_lora_scale_zero_is_the_base_model(model, concepts):
    base = pixels(model, "a red circle")
    zero = apply_adapters(model, loras=[f"{concepts['lora'] / 'pytorch_lora_weights.safetensors'}:0"])
    assert zero.adapters[0]["scale"] == 0.0
    assert np.array_equal(pixels(zero, "a red circle"), base)


def test_adapters_applied_leaves_the_model_as_it_was(model, concepts):
    base = pixels(model, "a red circle")
    with adapters_applied(model, concepts=[concepts["lora"], concepts["custom-diffusion"]]) as used:
        assert not np.array_equal(pixels(used, "a red circle"), base)
    assert "<star>" not in model.pipe.tokenizer.get_vocab()
    assert np.array_equal(pixels(model, "a red circle"), base)


def test_wrong_width_and_known_token_are_refused(model, tmp_path):
    save_file({"<wide>": torch.zeros(1, WIDTH + 1)}, tmp_path / "wide.safetensors")
    with pytest.raises(RetouchError, match="33 wide but this model's text encoder takes 32"):
        apply_adapters(model, embeddings=[str(tmp_path / "wide.safetensors")])
    save_file({"x": torch.zeros(1, WIDTH)}, tmp_path / "known.safetensors")
    with pytest.raises(RetouchError, match="already in the tokenizer's vocabulary"):
        apply_adapters(model, embeddings=[f"{tmp_path / 'known.safetensors'}:red"])
    with pytest.raises(RetouchError, match="not found"):
        apply_adapters(model, loras=[str(tmp_path / "missing.safetensors")])
    with pytest.raises(RetouchError, match="not a concept folder"):
        apply_adapters(model, concepts=[tmp_path])


class Boom:
    """Unpickling this would run code."""

    def __reduce__(self):
        return (print, ("unpickled!",))


def test_pt_embeddings_load_only_as_weights(model, tmp_path):
    weights = torch.randn(1, WIDTH)
    torch.save({"string_to_param": {"*": weights}, "name": "spark", "step": 10}, tmp_path / "spark.pt")
    used = apply_adapters(model, embeddings=[str(tmp_path / "spark.pt")])
    assert used.adapters[0]["tokens"] == ["spark"]
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"string_to_param": {"*": Boom()}}, f)
    with pytest.raises(RetouchError, match="refusing to unpickle"):
        apply_adapters(model, embeddings=[str(tmp_path / "evil.pt")])


def test_lora_tags_are_taken_from_the_prompt(concepts, tmp_path):
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    (lora_dir / "star.safetensors").write_bytes((concepts["lora"] / "pytorch_lora_weights.safetensors").read_bytes())
    prompt, loras = take_lora_tags("a (red:1.2) circle <lora:star:0.8>, pastel", lora_dir)
    assert prompt == "a (red:1.2) circle , pastel"
    assert loras == [f"{(lora_dir / 'star.safetensors').resolve()}:0.8"]
    assert take_lora_tags("<lora:star> a red circle", lora_dir)[1][0].endswith(":1.0")
    with pytest.raises(RetouchError, match="--lora-dir"):
        take_lora_tags("a <lora:star:0.5> circle", None)
    with pytest.raises(RetouchError, match="no nope.safetensors"):
        take_lora_tags("a <lora:nope:0.5> circle", lora_dir)


def test_recipe_and_a1111_text_record_each_adapter(model, concepts, tmp_path):
    from retouch.io.hashing import file_sha256, safetensors_data_sha256
    from retouch.io.png import PARAMETERS_KEY, save_png

    lora_file = concepts["lora"] / "pytorch_lora_weights.safetensors"
    embedding_file = concepts["textual-inversion"] / "learned_embeds.safetensors"
    used = apply_adapters(model, embeddings=[str(embedding_file)], loras=[f"{lora_file}:0.7"])
    result = generate(used, PROMPT, seed=1, steps=STEPS)
    embedding, lora = result.recipes[0]["adapters"]
    assert embedding["sha256"] == file_sha256(embedding_file) and embedding["path"] == str(embedding_file)
    assert (lora["kind"], lora["name"], lora["scale"]) == ("lora", "pytorch_lora_weights", 0.7)
    assert lora["sha256"] == file_sha256(lora_file)
    path = save_png(result.images[0], tmp_path / "a.png", result.recipes[0])
    text = Image.open(path).text[PARAMETERS_KEY]
    short_lora = safetensors_data_sha256(lora_file)[:12]  # A1111 hashes a LoRA's tensor data
    assert text.splitlines()[0] == f"{PROMPT} <lora:pytorch_lora_weights:0.7>"
    assert f'Lora hashes: "pytorch_lora_weights: {short_lora}"' in text
    assert f'TI hashes: "<star>: {file_sha256(embedding_file)[:12]}"' in text


def test_replay_with_adapters_is_bit_for_bit_and_refuses_a_changed_file(tiny_model_dir, concepts, tmp_path):
    from retouch.batch import replay
    from retouch.io.png import save_png

    folder = tmp_path / "star"
    folder.mkdir()
    for name in ("learned_embeds.safetensors", "concept.json"):
        (folder / name).write_bytes((concepts["textual-inversion"] / name).read_bytes())
    lora_file = tmp_path / "style.safetensors"
    lora_file.write_bytes((concepts["lora"] / "pytorch_lora_weights.safetensors").read_bytes())
    used = apply_adapters(fresh(tiny_model_dir), concepts=[folder], loras=[f"{lora_file}:0.5"])
    result = generate(used, PROMPT, seed=4, steps=STEPS)
    source = save_png(result.images[0], tmp_path / "a.png", result.recipes[0])
    replayed = replay(source, tmp_path / "again.png")  # loads the model and re-applies both
    assert replayed.identical and replayed.recipe == result.recipes[0]

    embedding_file = folder / "learned_embeds.safetensors"
    original = embedding_file.read_bytes()
    save_file({"<star>": torch.zeros(2, WIDTH)}, embedding_file)
    with pytest.raises(RetouchError, match="changed since: its sha256 was"):
        replay(source, tmp_path / "b.png", model="no-such-model")  # refused before any model loads
    embedding_file.write_bytes(original)
    lora_file.unlink()
    with pytest.raises(RetouchError, match="missing or unreadable"):
        replay(source, tmp_path / "b.png", model="no-such-model")


def test_dreambooth_recipe_names_the_concepts_model_and_replays(tiny_model_dir, concepts, tmp_path):
    from retouch.batch import replay
    from retouch.io.png import save_png

    used = apply_adapters(fresh(tiny_model_dir), concepts=[concepts["dreambooth"]])
    assert used.name == str((concepts["dreambooth"] / "model").resolve())
    result = generate(used, PROMPT, seed=2, steps=STEPS)
    source = save_png(result.images[0], tmp_path / "a.png", result.recipes[0])
    assert replay(source, tmp_path / "again.png").identical


def test_batch_jobs_take_concepts_and_leave_the_model_plain(tiny_model_dir, concepts, tmp_path):
    from retouch.batch import run_batch
    from retouch.io.png import read_recipe

    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    (lora_dir / "shiny.safetensors").write_bytes((concepts["lora"] / "pytorch_lora_weights.safetensors").read_bytes())
    jobs = [
        {"id": "plain1", "prompt": "a red circle", "seed": 1, "steps": STEPS},
        {"id": "star", "prompt": PROMPT, "seed": 1, "steps": STEPS, "concepts": [str(concepts["custom-diffusion"])]},
        {"id": "tag", "prompt": "a red circle <lora:shiny:0.9>", "seed": 1, "steps": STEPS, "lora_dir": str(lora_dir)},
        {"id": "plain2", "prompt": "a red circle", "seed": 1, "steps": STEPS},
    ]
    (tmp_path / "jobs.jsonl").write_text("\n".join(json.dumps(job) for job in jobs))
    summary = run_batch(tmp_path / "jobs.jsonl", tmp_path / "out", model=str(tiny_model_dir))
    assert summary.failed == 0
    out = tmp_path / "out"
    assert [r["kind"] for r in read_recipe(out / "star.png")["adapters"]] == ["embedding", "custom_diffusion"]
    tagged = read_recipe(out / "tag.png")
    assert tagged["prompt"] == "a red circle" and tagged["adapters"][0]["scale"] == 0.9
    assert "adapters" not in read_recipe(out / "plain2.png")
    plain1, tag, plain2 = (np.asarray(Image.open(out / f"{name}.png")) for name in ("plain1", "tag", "plain2"))
    assert np.array_equal(plain1, plain2) and not np.array_equal(plain1, tag)


def scene() -> np.ndarray:
    """A red square on blue, 32 x 32, as the tiny model draws pictures."""
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[:] = (40, 90, 220)
    pixels[8:20, 10:22] = (220, 40, 40)
    return pixels


def test_edit_into_a_concept_keeps_the_outside(tiny_model_dir, concepts, tmp_path, capsys):
    from retouch.cli import main
    from retouch.edit.layer import feather_alpha
    from retouch.io.png import read_recipe

    Image.fromarray(scene()).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    argv = [
        "edit", str(tmp_path / "in.png"), "--source", "a large red circle on a blue background",
        "--target", "a large red <star> on a blue background", "--concept", str(concepts["textual-inversion"]),
        "--output", str(out), "--model", str(tiny_model_dir), "--steps", str(STEPS), "--seed", "1", "--quiet",
        "--json",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["region"] == "foreground" and report["region_confidence"] == 1.0
    output, mask = np.asarray(Image.open(out)), np.asarray(Image.open(tmp_path / "out.mask.png")) == 255
    kept = feather_alpha(mask) == 0
    assert kept.sum() > 50 and np.array_equal(output[kept], scene()[kept])
    assert read_recipe(out)["adapters"][0]["tokens"] == ["<star>"]
    assert main(["replay", str(out), "--quiet"]) == 0 and "identical to the source" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["generate", "style", "interpolate"])
def test_every_command_takes_the_adapter_flags(tiny_model_dir, concepts, tmp_path, capsys, command):
    from retouch.cli import main

    prompts = {
        "generate": [PROMPT],
        "style": [f"{PROMPT}, pastel", "--style", "pastel"],
        "interpolate": [PROMPT, "a red circle"],
    }
    extra = ["--frames", "2"] if command == "interpolate" else []
    argv = [command, *prompts[command], "--concept", str(concepts["textual-inversion"]), *extra,
            "--lora", f"{concepts['lora'] / 'pytorch_lora_weights.safetensors'}:0.5", "--model", str(tiny_model_dir),
            "--steps", str(STEPS), "--seed", "1", "--output", str(tmp_path), "--quiet", "--json"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    recipe = printed.get("recipe") or printed["recipes"][0]
    assert [record["kind"] for record in recipe["adapters"]] == ["embedding", "lora"]
    missing = ["--embedding", str(tmp_path / "nope.safetensors"), "--model", str(tiny_model_dir)]
    assert main([*argv[: 1 + len(prompts[command])], *missing]) == 2
    assert "embedding file not found" in capsys.readouterr().err


def test_imagic_takes_a_concept_and_replays(tiny_model_dir, concepts, tmp_path, capsys):
    from retouch.batch import replay
    from retouch.cli import main
    from retouch.io.png import read_recipe

    Image.fromarray(scene()).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    fast = ["--embed-steps", "2", "--tune-steps", "2", "--batch-size", "1", "--steps", "2", "--quiet"]
    argv = ["imagic", str(tmp_path / "in.png"), "--target", PROMPT, "--output", str(out), "--region", "global",
            "--model", str(tiny_model_dir), "--concept", str(concepts["textual-inversion"]), "--no-cache", *fast]
    assert main(argv) == 0
    assert read_recipe(out)["adapters"][0]["tokens"] == ["<star>"]
    assert replay(out, tmp_path / "again.png", device="cpu").identical


def test_an_a1111_png_with_lora_tags_replays_with_a_lora_dir(tiny_model_dir, concepts, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    from retouch.batch import replay

    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    (lora_dir / "shiny.safetensors").write_bytes((concepts["lora"] / "pytorch_lora_weights.safetensors").read_bytes())
    info = PngInfo()
    info.add_text("parameters", f"a red circle <lora:shiny:0.6>\nSteps: {STEPS}, Sampler: Euler a, CFG scale: 7, "
                  "Seed: 5, Size: 32x32, Model: tiny")
    Image.fromarray(scene()).save(tmp_path / "a1111.png", pnginfo=info)
    with pytest.raises(RetouchError, match="--lora-dir"):
        replay(tmp_path / "a1111.png", model=str(tiny_model_dir), device="cpu")
    again = replay(tmp_path / "a1111.png", tmp_path / "again.png", str(tiny_model_dir), device="cpu",
                   adapters={"lora_dir": str(lora_dir)})
    assert again.recipe["prompt"] == "a red circle"
    assert (again.recipe["adapters"][0]["name"], again.recipe["adapters"][0]["scale"]) == ("shiny", 0.6)


def test_imagic_with_a_lora_tunes_the_whole_unet(tiny_model_dir, concepts, tmp_path, capsys):
    from retouch.cli import main
    from retouch.io.png import read_recipe

    Image.fromarray(scene()).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    fast = ["--embed-steps", "2", "--tune-steps", "2", "--batch-size", "1", "--steps", "2", "--quiet", "--no-cache"]
    argv = ["imagic", str(tmp_path / "in.png"), "--target", "a red circle", "--output", str(out), "--region", "global",
            "--model", str(tiny_model_dir), "--lora", str(concepts["lora"] / "pytorch_lora_weights.safetensors"), *fast]
    assert main(argv) == 2 and "pass --tune full" in capsys.readouterr().err
    assert main([*argv, "--tune", "full"]) == 0
    assert read_recipe(out)["adapters"][0]["kind"] == "lora"


def test_a_concept_token_nothing_defines_is_warned_about(model, concepts, caplog, tmp_path):
    with caplog.at_level("WARNING", logger="retouch"):
        generate(model, PROMPT, seed=1, steps=1)
    assert "names <star>, which no loaded embedding or concept defines" in caplog.text
    with caplog.at_level("WARNING", logger="retouch"):
        generate(model, "a red circle <lora:shiny:0.5>", seed=1, steps=1)
    assert "holds a <lora:name:weight> tag" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="retouch"):
        used = apply_adapters(model, concepts=[concepts["textual-inversion"]])
        generate(used, PROMPT, seed=1, steps=1)
    assert "<star>" not in caplog.text and "was trained on" not in caplog.text
    other = random_embeddings(tmp_path / "other", token="<moon>")
    concept = json.loads((other / "concept.json").read_text())
    (other / "concept.json").write_text(json.dumps({**concept, "base_model": "shapes-64"}))
    with caplog.at_level("WARNING", logger="retouch"):
        apply_adapters(used, concepts=[other])
    assert f"the concept {other} was trained on shapes-64, not on" in caplog.text


def test_a_concept_token_in_place_of_the_shape_is_the_object_changing():
    from retouch.edit.region import caption_region, is_recolor

    source = "a large red circle on a blue background"
    guess = caption_region(source, PROMPT)
    assert (guess.region, guess.exact, guess.evidence["changed"]) == ("foreground", True, ["shape"])
    recoloured = caption_region(source, "a large green <star> on a blue background")
    assert recoloured.region == "foreground" and recoloured.evidence["changed"] == ["color", "shape"]
    assert caption_region(source, "a large red <star> on a green background").region == "global"
    assert not is_recolor(source, PROMPT)


def test_custom_diffusion_equals_diffusers_own_loader(tiny_model_dir, concepts, tmp_path):
    """diffusers 0.42 loads Custom Diffusion only from the pickled .bin and only given ``_pipeline``
    (from .safetensors it sets nothing, or fails): ours reads the .safetensors to the same pixels."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    path = concepts["custom-diffusion"] / "pytorch_custom_diffusion_weights.safetensors"
    weights = load_file(path)
    plain = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
    trained = {key.partition(".processor.")[0] + ".processor" for key in weights}
    empty = {name: {} for name in plain.unet.attn_processors if name not in trained}
    plain.unet.load_attn_procs({**weights, **empty}, _pipeline=plain)  # the .bin layout: empty self-attention
    ours = apply_adapters(fresh(tiny_model_dir), records=[{"kind": "custom_diffusion", "path": str(path)}])

    def draw(pipe):
        return pipe("a red circle", num_inference_steps=STEPS, generator=torch.Generator().manual_seed(0)).images[0]

    assert np.array_equal(np.asarray(draw(plain)), np.asarray(draw(ours.pipe)))
    assert not np.array_equal(np.asarray(draw(plain)), np.asarray(draw(fresh(tiny_model_dir).pipe)))
