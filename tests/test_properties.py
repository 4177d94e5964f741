"""Property-based tests: the parsers that read what users hand us never fail with anything but a
RetouchError, whatever the bytes.

Covered: the PNG recipe reader (random text chunks under retouch's and A1111's keys, random
bytes), the A1111 ``parameters`` parser, the prompt-weighting parser, the batch job parser with
every task's model-free check, and image loading (random bytes, random modes and sizes).
"""

from __future__ import annotations

import io
import json
import math
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retouch.batch.registry import default_registry
from retouch.batch.runner import read_jobs
from retouch.core.weighting import parse_prompt_attention
from retouch.edit.inputs import read_image
from retouch.errors import RetouchError
from retouch.io.images import load_image
from retouch.io.png import PARAMETERS_KEY, RECIPE_KEY, parse_parameters, read_recipe

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
REGISTRY = default_registry()

# JSON values a user (or a tampered file) could put in a job, nested a little
json_scalars = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=10,
)
JOB_KEYS = [
    "task",
    "id",
    "prompt",
    "negative_prompt",
    "seed",
    "steps",
    "guidance_scale",
    "scheduler",
    "width",
    "height",
    "num_images",
    "image",
    "source",
    "target",
    "strength",
    "method",
    "region",
    "mask",
    "tries",
    "eta",
    "frames",
    "amount",
    "style",
    "prompt_a",
    "prompt_b",
    "hold_common",
]
TASKS = st.sampled_from(["generate", "edit", "imagic", "interpolate", "style"])
jobs = st.fixed_dictionaries({"task": TASKS}, optional={key: json_values for key in JOB_KEYS[1:]})
# A1111 settings lines built from the keys it writes, with random values
a1111_pairs = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "Steps",
                "Sampler",
                "CFG scale",
                "Seed",
                "Size",
                "Model",
                "Denoising strength",
                "Source prompt",
                "Hires upscale",
            ]
        ),
        st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=12),
    ),
    max_size=6,
)


def png_with_text(chunks: dict[str, str]) -> bytes:
    info = PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def read_file(data: bytes, suffix: str, reader):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"input{suffix}"
        path.write_bytes(data)
        return reader(path)


@SETTINGS
@given(st.text(max_size=200))
def test_prompt_weighting_parser_never_fails(prompt):
    runs = parse_prompt_attention(prompt)
    assert all(isinstance(text, str) and math.isfinite(weight) for text, weight in runs)


@SETTINGS
@given(st.text(max_size=120), a1111_pairs)
def test_a1111_parser_returns_a_recipe_or_refuses(prompt, pairs):
    text = prompt + "\n" + ", ".join(f"{key}: {value}" for key, value in pairs)
    try:
        recipe = parse_parameters(text)
    except RetouchError:
        return
    assert recipe["task"] in ("generate", "edit") and isinstance(recipe["prompt"], str)


@SETTINGS
@given(st.dictionaries(st.sampled_from([RECIPE_KEY, PARAMETERS_KEY, "Comment"]), st.text(max_size=200), max_size=3))
def test_recipe_reader_on_random_png_chunks(chunks):
    try:
        recipe = read_file(png_with_text(chunks), ".png", read_recipe)
    except RetouchError:
        return
    assert isinstance(recipe, dict)


@SETTINGS
@given(json_values)
def test_recipe_reader_on_random_json(value):
    try:
        recipe = read_file(png_with_text({RECIPE_KEY: json.dumps(value)}), ".png", read_recipe)
    except RetouchError:
        return
    assert isinstance(recipe, dict)


@SETTINGS
@given(st.binary(max_size=600))
def test_recipe_reader_on_random_bytes(data):
    try:
        read_file(data, ".png", read_recipe)
    except RetouchError:
        pass


@SETTINGS
@given(st.lists(st.one_of(st.text(max_size=60), jobs.map(json.dumps)), max_size=5))
def test_job_parser_and_checks_refuse_cleanly(lines):
    try:
        parsed = read_file("\n".join(lines).encode(), ".jsonl", read_jobs)
    except RetouchError:
        return
    for job in parsed:
        if job.error is not None:
            assert job.recipe is None and isinstance(job.error, str)
            continue
        try:
            REGISTRY.check(job.recipe)
        except RetouchError:
            pass


@SETTINGS
@given(jobs)
def test_every_task_check_refuses_cleanly(job):
    try:
        REGISTRY.check(job)
    except RetouchError:
        pass


@SETTINGS
@given(st.binary(max_size=2000))
def test_loading_random_bytes_refuses_cleanly(data):
    try:
        image = read_file(data, ".png", load_image)
    except RetouchError:
        return
    assert image.mode == "RGB"


@SETTINGS
@given(
    st.sampled_from(["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F", "YCbCr"]),
    st.integers(1, 40),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
    st.sampled_from(["PNG", "TIFF", "WEBP", "BMP", "JPEG"]),
)
def test_any_mode_and_size_loads_as_rgb(mode, width, height, seed, kind):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=kind)
    except (OSError, ValueError, KeyError):
        return  # a mode this format cannot hold: nothing a user could hand us
    try:
        loaded = read_file(buffer.getvalue(), f".{kind.lower()}", read_image)
    except RetouchError:
        return
    assert loaded.image.mode == "RGB"
    assert loaded.image.size[0] >= 1 and loaded.image.size[1] >= 1
