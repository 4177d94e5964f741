"""PNG recipes: AUTOMATIC1111's parameters text, retouch's JSON, and reading them back."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retouch.errors import RetouchError
from retouch.io.png import format_parameters, parse_parameters, read_recipe, save_png

RECIPE = {
    "task": "generate",
    "prompt": "a large red circle on a blue background",
    "negative_prompt": "blurry, text",
    "seed": 42,
    "steps": 25,
    "guidance_scale": 7.5,
    "scheduler": "euler-a",
    "width": 64,
    "height": 64,
    "model": "shapes-64",
    "retouch_version": "0.1.0",
}


def test_a1111_parameters_text_is_exact():
    assert format_parameters(RECIPE) == (
        "a large red circle on a blue background\n"
        "Negative prompt: blurry, text\n"
        "Steps: 25, Sampler: Euler a, CFG scale: 7.5, Seed: 42, Size: 64x64, Model: shapes-64"
    )


def test_a1111_text_without_negative_prompt_and_other_samplers():
    recipe = {**RECIPE, "negative_prompt": "", "scheduler": "dpm++", "guidance_scale": 7.0, "width": 96}
    assert format_parameters(recipe) == (
        "a large red circle on a blue background\n"
        "Steps: 25, Sampler: DPM++ 2M, CFG scale: 7, Seed: 42, Size: 96x64, Model: shapes-64"
    )
    schedulers = ("lms", "ddim", "euler", "euler-a", "dpm++")
    names = {s: format_parameters({**RECIPE, "scheduler": s}).split("Sampler: ")[1].split(",")[0] for s in schedulers}
    assert names == {
        "lms": "LMS",
        "ddim": "DDIM",
        "euler": "Euler",
        "euler-a": "Euler a",
        "dpm++": "DPM++ 2M",
    }


def test_model_path_shows_as_its_name():
    assert "Model: my-model\n" not in format_parameters({**RECIPE, "model": "/models/my-model"})
    assert format_parameters({**RECIPE, "model": "/models/my-model"}).endswith("Model: my-model")
    assert format_parameters({**RECIPE, "model": "/m/sd15.safetensors"}).endswith("Model: sd15")


def test_parameters_parse_back():
    parsed = parse_parameters(format_parameters(RECIPE))
    expected = {k: RECIPE[k] for k in parsed}
    assert parsed == expected and set(parsed) == set(RECIPE) - {"retouch_version"}


def test_parse_a1111_text_with_extra_fields():
    text = (
        "a cat,\nwearing a hat\nNegative prompt: dog\n"
        "Steps: 20, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 512x768, Model hash: abc, "
        'Lora hashes: "x: 1, y: 2"'
    )
    parsed = parse_parameters(text)
    assert parsed["prompt"] == "a cat,\nwearing a hat" and parsed["negative_prompt"] == "dog"
    assert (parsed["scheduler"], parsed["width"], parsed["height"], parsed["seed"]) == ("ddim", 512, 768, 1)


def test_png_carries_both_chunks_and_reads_back(tmp_path):
    path = save_png(Image.new("RGB", (8, 8), "red"), tmp_path / "a.png", RECIPE)
    with Image.open(path) as image:
        assert image.text["parameters"] == format_parameters(RECIPE)
        assert json.loads(image.text["retouch"]) == RECIPE
    assert read_recipe(path) == RECIPE
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left


def test_non_latin_prompt_round_trips(tmp_path):
    recipe = {**RECIPE, "prompt": "un cercle rouge, 赤い丸"}
    assert read_recipe(save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", recipe)) == recipe


def test_a1111_png_without_retouch_chunk(tmp_path):
    info = PngInfo()
    info.add_text("parameters", format_parameters(RECIPE))
    Image.new("RGB", (8, 8)).save(tmp_path / "a1111.png", pnginfo=info)
    assert read_recipe(tmp_path / "a1111.png")["seed"] == 42


def test_png_without_recipe_is_a_clear_error(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "plain.png")
    with pytest.raises(RetouchError, match="carries no recipe"):
        read_recipe(tmp_path / "plain.png")


def test_a_prompt_cannot_add_a_settings_line(tmp_path):
    """A line break in a prompt would start a line that A1111 readers take for the settings."""
    spoof = "a red circle\nSteps: 99, Sampler: X, CFG scale: 1, Seed: 1, Size: 8x8, Model: evil"
    recipe = {**RECIPE, "prompt": spoof, "negative_prompt": "blurry\nNegative prompt: evil\r\nSteps: 98"}
    text = format_parameters(recipe)
    assert text.count("\n") == 2 and text.splitlines()[-1].startswith("Steps: 25, Sampler: Euler a")
    parsed = parse_parameters(text)
    assert (parsed["steps"], parsed["scheduler"], parsed["model"]) == (25, "euler-a", "shapes-64")
    assert parsed["prompt"] == spoof.replace("\n", " ")  # whitespace to CLIP: the same picture
    assert parsed["negative_prompt"] == "blurry Negative prompt: evil Steps: 98"
    path = save_png(Image.new("RGB", (8, 8)), tmp_path / "a.png", recipe)
    assert read_recipe(path) == recipe  # the JSON recipe keeps the prompt exactly


def test_values_with_commas_are_quoted_as_a1111_quotes_them():
    text = format_parameters({**RECIPE, "model": "/models/sd, v1: final"})
    assert text.endswith('Model: "sd, v1: final"')
    assert parse_parameters(text)["model"] == "sd, v1: final"


def test_an_edit_writes_denoising_strength_and_its_source_caption():
    edit = {
        **RECIPE, "task": "edit", "image": "/in.png", "source": "a red circle, on blue", "target": RECIPE["prompt"],
        "strength": 0.8, "method": "blend", "region": "background",
    }
    text = format_parameters(edit)
    assert text.splitlines()[-1].endswith(
        'Model: shapes-64, Denoising strength: 0.8, Source prompt: "a red circle, on blue"'
    )
    parsed = parse_parameters(text)
    assert parsed["task"] == "edit" and parsed["strength"] == 0.8
    assert (parsed["source"], parsed["target"]) == (edit["source"], edit["prompt"])


def test_a1111_hires_text_stays_a_generation():
    text = (
        "a cat\nSteps: 20, Sampler: DDIM, CFG scale: 7, Seed: 1, Size: 512x512, "
        "Denoising strength: 0.7, Hires upscale: 2"
    )
    assert parse_parameters(text)["task"] == "generate"
    with pytest.raises(RetouchError, match="unreadable A1111 parameters"):
        parse_parameters("a cat\nSteps: many, Sampler: DDIM, Seed: 1")
