"""Every command refuses bad input with a short message and exit code 2 (a RetouchError in the
Python API), never a traceback, and never touches its input files.

One table per surface: the CLI through ``retouch.cli.main`` (argparse's own refusals exit 2 as
well), a few real subprocesses where the exit code itself matters, and the Python API. Every case
fails before any denoising, so the whole file takes seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import STEPS
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from retouch.cli import main
from retouch.errors import RetouchError

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "a large red circle on a blue background"
TARGET = "a large green circle on a blue background"
RECIPE = {
    "task": "generate",
    "prompt": "a red circle",
    "negative_prompt": "",
    "seed": 1,
    "steps": STEPS,
    "guidance_scale": 7.5,
    "scheduler": "euler-a",
    "width": 32,
    "height": 32,
    "model": "tiny",
}


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def bomb_png(side: int = 100_000) -> bytes:
    """A valid PNG header claiming ``side`` x ``side`` pixels: 10 gigapixels from 60 bytes."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64)) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def png_bytes(image: Image.Image, text: dict[str, str] | None = None) -> bytes:
    info = PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


class Evil:
    """Unpickling this runs code: a model file holding it must be refused, never loaded."""

    def __reduce__(self):
        return (os.system, ("touch /tmp/retouch-pwned",))


def jsonl(*jobs: dict | str) -> bytes:
    return "".join((job if isinstance(job, str) else json.dumps(job)) + "\n" for job in jobs).encode()


def recipe_png(recipe: dict | str) -> bytes:
    text = recipe if isinstance(recipe, str) else json.dumps(recipe)
    return png_bytes(Image.new("RGB", (32, 32), "red"), {"retouch": text})


GOOD = Image.new("RGB", (32, 32), (200, 30, 30))
GOOD_PNG = png_bytes(GOOD)
FILES: dict[str, bytes] = {
    "good.png": GOOD_PNG,
    "empty.png": b"",
    "truncated.png": GOOD_PNG[: len(GOOD_PNG) // 2],
    "random.png": np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
    "text.png": b"this is not a picture\n",
    "bomb.png": bomb_png(),
    "wide.png": png_bytes(Image.new("RGB", (4096, 8))),
    "grey16.png": png_bytes(Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16))),
    "one.png": png_bytes(Image.new("RGB", (1, 1), "red")),
    "mask-small.png": png_bytes(Image.new("L", (8, 8), 255)),
    "mask-empty.png": png_bytes(Image.new("L", (32, 32), 0)),
    "plain.png": GOOD_PNG,  # a picture without a recipe
    "recipe-notjson.png": recipe_png("{not json"),
    "recipe-list.png": recipe_png("[1, 2]"),
    "recipe-many.png": recipe_png({**RECIPE, "num_images": 1000}),
    "recipe-nan.png": recipe_png(json.dumps(RECIPE).replace("7.5", "NaN")),
    "recipe-task.png": recipe_png({**RECIPE, "task": "teleport"}),
    "recipe-sched.png": recipe_png({**RECIPE, "scheduler": "warp"}),
    "recipe-steps.png": recipe_png({**RECIPE, "steps": 10**8}),
    "recipe-edit-escape.png": recipe_png(
        {"task": "edit", "image": "../../../etc/passwd", "source": "a", "target": "b", "steps": STEPS}
    ),
    "recipe-good.png": recipe_png(RECIPE),
    "jobs-empty.jsonl": b"",
    "jobs-random.jsonl": bytes(range(256)) * 4,
    "jobs-notjson.jsonl": jsonl("{oops"),
    "jobs-list.jsonl": jsonl("[1, 2, 3]"),
    "jobs-noprompt.jsonl": jsonl({"id": "a"}),
    "jobs-traversal.jsonl": jsonl({"id": "../escape", "prompt": "x"}),
    "jobs-absolute.jsonl": jsonl({"id": "/tmp/abs", "prompt": "x"}),
    "jobs-dup.jsonl": jsonl({"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}),
    "jobs-clash.jsonl": jsonl({"id": "x", "prompt": "x"}, {"id": "x.error", "prompt": "y"}),
    "jobs-task.jsonl": jsonl({"id": "a", "task": "teleport", "prompt": "x"}),
    "jobs-field.jsonl": jsonl({"id": "a", "prompt": "x", "stepz": 3}),
    "jobs-nan.jsonl": jsonl('{"id": "a", "prompt": "x", "guidance_scale": NaN}'),
    "jobs-steps.jsonl": jsonl({"id": "a", "prompt": "x", "steps": 10**7}),
    "jobs-type.jsonl": jsonl({"id": "a", "prompt": "x", "steps": "two"}),
    "jobs-sched.jsonl": jsonl({"id": "a", "prompt": "x", "scheduler": "warp"}),
    "jobs-edit-noimage.jsonl": jsonl({"id": "e", "task": "edit", "source": SOURCE, "target": TARGET}),
    "jobs-edit-badimage.jsonl": jsonl(
        {"id": "e", "task": "edit", "image": "empty.png", "source": SOURCE, "target": TARGET, "steps": STEPS}
    ),
    "jobs-edit-same.jsonl": jsonl(
        {"id": "e", "task": "edit", "image": "good.png", "source": SOURCE, "target": SOURCE, "steps": STEPS}
    ),
    "recipe-train.json": json.dumps({"vae_steps": 1}).encode(),
    "recipe-train-bad.json": b"{not json",
    "recipe-train-field.json": json.dumps({"warp_factor": 9}).encode(),
    "recipe-train-list.json": b"[1]",
    "recipe-train-nan.json": b'{"vae_steps": NaN}',
    "model-pickle/unet/diffusion_pytorch_model.bin": pickle.dumps(Evil()),
    "model-pickle/model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
    "model-empty/model_index.json": b"",
    "evil.ckpt": pickle.dumps(Evil()),
    "empty.safetensors": b"",
    "junk.safetensors": b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}!!" * 4,
}
MODEL = "<model>"  # replaced by the tiny model's folder


@dataclass
class Case:
    name: str
    argv: list[str]
    code: int
    message: str
    prepare: Callable[[Path], None] | None = None


def edit_argv(image: str = "good.png", *extra: str, source: str = SOURCE, target: str = TARGET) -> list[str]:
    return [
        "edit",
        image,
        "--source",
        source,
        "--target",
        target,
        "--output",
        "out/o.png",
        "--steps",
        str(STEPS),
        "--model",
        MODEL,
        *extra,
    ]


def imagic_argv(image: str = "good.png", *extra: str) -> list[str]:
    return [
        "imagic",
        image,
        "--target",
        TARGET,
        "--output",
        "out/o.png",
        "--steps",
        str(STEPS),
        "--no-cache",
        "--embed-steps",
        "1",
        "--tune-steps",
        "1",
        "--model",
        MODEL,
        *extra,
    ]


def generate_argv(*extra: str) -> list[str]:
    return ["generate", "a red circle", "--steps", str(STEPS), "--output", "out", "--model", MODEL, *extra]


def interpolate_argv(*extra: str) -> list[str]:
    return [
        "interpolate",
        "a red circle",
        "a blue square",
        "--steps",
        str(STEPS),
        "--output",
        "out",
        "--model",
        MODEL,
        *extra,
    ]


def style_argv(*extra: str) -> list[str]:
    return [
        "style",
        "a red circle",
        "--style",
        "pastel",
        "--steps",
        str(STEPS),
        "--output",
        "out",
        "--model",
        MODEL,
        *extra,
    ]


def instruct_argv(image: str = "good.png", *extra: str, instruction: str = "make the background green") -> list[str]:
    return ["instruct", image, instruction, "--output", "out/o.png", "--steps", str(STEPS), *extra]


def batch_argv(jobs: str, *extra: str) -> list[str]:
    return ["batch", jobs, "--out", "out", "--model", MODEL, *extra]


def replay_argv(image: str, *extra: str) -> list[str]:
    return ["replay", image, "--output", "out/again.png", "--model", MODEL, *extra]


def train_argv(recipe: str, *extra: str) -> list[str]:
    return ["train", "model", "--recipe", recipe, "--output", "run", *extra]


def out_is_a_file(root: Path) -> None:
    (root / "out").write_bytes(b"a file where a folder should be")


CLI_CASES = [
    # generate
    Case(
        "generate-guidance-nan",
        generate_argv("--guidance-scale", "nan"),
        2,
        "guidance_scale must be a finite number, got nan",
    ),
    Case(
        "generate-guidance-negative",
        generate_argv("--guidance-scale", "-3"),
        2,
        "guidance_scale must be a finite number in [0, 50], got -3.0",
    ),
    Case("generate-steps-zero", generate_argv("--steps", "0"), 2, "steps must be a whole number in [1, 1000], got 0"),
    Case(
        "generate-steps-huge",
        generate_argv("--steps", "100000000"),
        2,
        "steps must be a whole number in [1, 1000], got 100000000",
    ),
    Case("generate-steps-text", generate_argv("--steps", "ten"), 2, "argument --steps: invalid int value: 'ten'"),
    Case(
        "generate-width-huge",
        generate_argv("--width", "65536"),
        2,
        "width must be a whole number in [1, 2048], got 65536",
    ),
    Case("generate-width-odd", generate_argv("--width", "33"), 2, "width must be a positive multiple of 8, got 33"),
    Case(
        "generate-size-megapixels",
        generate_argv("--width", "2048", "--height", "2048"),
        2,
        "2048x2048 is 4.2 megapixels; the limit is 4.0",
    ),
    Case(
        "generate-images-zero",
        generate_argv("--num-images", "0"),
        2,
        "num_images must be a whole number in [1, 1000], got 0",
    ),
    Case(
        "generate-images-huge",
        generate_argv("--num-images", "1000000"),
        2,
        "num_images must be a whole number in [1, 1000], got 1000000",
    ),
    Case("generate-seed-negative", generate_argv("--seed", "-1"), 2, "seed must be a whole number in [0,"),
    Case("generate-scheduler-unknown", generate_argv("--scheduler", "warp"), 2, "invalid choice: 'warp'"),
    Case("generate-dtype-unknown", generate_argv("--dtype", "float8"), 2, "invalid choice: 'float8'"),
    Case(
        "generate-style-amount-inf",
        generate_argv("--style", "pastel", "--style-amount", "inf"),
        2,
        "amount must be a finite number, got inf",
    ),
    Case("generate-model-missing", generate_argv("--model", "no/such/folder"), 2, "model not found: 'no/such/folder'"),
    Case(
        "generate-model-pickle",
        generate_argv("--model", "model-pickle"),
        2,
        "cannot load the diffusers folder model-pickle",
    ),
    Case(
        "generate-model-empty-index",
        generate_argv("--model", "model-empty"),
        2,
        "model-empty/model_index.json is corrupt: not valid JSON",
    ),
    Case(
        "generate-model-ckpt-pickle",
        generate_argv("--model", "evil.ckpt"),
        2,
        "evil.ckpt is not a readable PyTorch checkpoint",
    ),
    Case(
        "generate-model-empty-safetensors",
        generate_argv("--model", "empty.safetensors"),
        2,
        "model file is empty (0 bytes): empty.safetensors",
    ),
    Case(
        "generate-model-junk-safetensors",
        generate_argv("--model", "junk.safetensors"),
        2,
        "junk.safetensors is not a valid .safetensors file",
    ),
    Case(
        "generate-output-unwritable",
        [*generate_argv()[:-4], "--output", "/proc/out", "--model", MODEL],
        2,
        "cannot write to output folder /proc/out",
    ),
    Case("generate-output-is-a-file", generate_argv(), 2, "cannot write to output folder out", out_is_a_file),
    # edit
    Case("edit-image-missing", edit_argv("nothing.png"), 2, "image not found: nothing.png"),
    Case("edit-image-empty", edit_argv("empty.png"), 2, "image file is empty (0 bytes): empty.png"),
    Case(
        "edit-image-truncated",
        edit_argv("truncated.png"),
        2,
        "cannot read image truncated.png: the file is corrupt or not an image",
    ),
    Case(
        "edit-image-random-bytes",
        edit_argv("random.png"),
        2,
        "cannot read image random.png: the file is corrupt or not an image",
    ),
    Case(
        "edit-image-text", edit_argv("text.png"), 2, "cannot read image text.png: the file is corrupt or not an image"
    ),
    Case("edit-image-bomb", edit_argv("bomb.png"), 2, "the limit is 2048 pixels on a side"),
    Case(
        "edit-image-too-wide",
        edit_argv("wide.png"),
        2,
        "the image is 4096x8 pixels; the limit is 2048 pixels on a side",
    ),
    Case(
        "edit-image-folder",
        edit_argv("out"),
        2,
        "expected an image file but out is a folder",
        lambda root: (root / "out").mkdir(),
    ),
    Case("edit-identical-captions", edit_argv(target=SOURCE), 2, "the source and target captions name no change"),
    Case("edit-empty-target", edit_argv(target=""), 2, "the target caption is empty"),
    Case("edit-strength-zero", edit_argv("good.png", "--strength", "0"), 2, "strength must be in (0, 1], got 0.0"),
    Case("edit-strength-nan", edit_argv("good.png", "--strength", "nan"), 2, "strength must be in (0, 1], got nan"),
    Case("edit-strength-two", edit_argv("good.png", "--strength", "2"), 2, "strength must be in (0, 1], got 2.0"),
    Case(
        "edit-guidance-inf",
        edit_argv("good.png", "--guidance-scale", "inf"),
        2,
        "guidance_scale must be a finite number, got inf",
    ),
    Case(
        "edit-steps-huge",
        edit_argv("good.png", "--steps", "5000"),
        2,
        "steps must be a whole number in [1, 1000], got 5000",
    ),
    Case(
        "edit-tries-zero",
        edit_argv("good.png", "--tries", "0"),
        2,
        "tries must be a whole number from 1 to 16 or 'auto', got 0",
    ),
    Case("edit-method-unknown", edit_argv("good.png", "--method", "magic"), 2, "invalid choice: 'magic'"),
    Case("edit-region-unknown", edit_argv("good.png", "--region", "middle"), 2, "invalid choice: 'middle'"),
    Case("edit-mask-missing", edit_argv("good.png", "--mask", "nomask.png"), 2, "image not found: nomask.png"),
    Case(
        "edit-mask-wrong-size",
        edit_argv("good.png", "--mask", "mask-small.png"),
        2,
        "the mask mask-small.png is 8x8 but the image is 32x32",
    ),
    Case(
        "edit-mask-empty-file",
        edit_argv("good.png", "--mask", "empty.png"),
        2,
        "image file is empty (0 bytes): empty.png",
    ),
    Case(
        "edit-judge-missing",
        edit_argv("good.png", "--judge", "no/such/judge"),
        2,
        "--judge no/such/judge: not 'oracle' and not a CLIP model folder",
    ),
    Case(
        "edit-output-is-input",
        [
            "edit",
            "good.png",
            "--source",
            SOURCE,
            "--target",
            TARGET,
            "--output",
            "good.png",
            "--steps",
            str(STEPS),
            "--model",
            MODEL,
        ],
        2,
        "refusing to overwrite the input good.png",
    ),
    Case(
        "edit-output-unwritable",
        [*edit_argv()[:7], "/proc/o.png", *edit_argv()[8:]],
        2,
        "cannot write to output folder /proc",
    ),
    Case(
        "edit-model-pickle",
        edit_argv("good.png", "--model", "evil.ckpt"),
        2,
        "evil.ckpt is not a readable PyTorch checkpoint",
    ),
    # imagic
    Case("imagic-image-empty", imagic_argv("empty.png"), 2, "image file is empty (0 bytes): empty.png"),
    Case("imagic-image-bomb", imagic_argv("bomb.png"), 2, "the limit is 2048 pixels on a side"),
    Case(
        "imagic-eta-nan",
        imagic_argv("good.png", "--eta", "nan"),
        2,
        "eta must be a number in [0.0, 2.0] or 'auto', got nan",
    ),
    Case(
        "imagic-eta-huge",
        imagic_argv("good.png", "--eta", "100"),
        2,
        "eta must be a number in [0.0, 2.0] or 'auto', got 100.0",
    ),
    Case("imagic-lr-zero", imagic_argv("good.png", "--lr-embed", "0"), 2, "lr_embed must be positive, got 0.0"),
    Case(
        "imagic-embed-steps-negative",
        imagic_argv("good.png", "--embed-steps", "-1"),
        2,
        "embed_steps must be at least 0, got -1",
    ),
    Case(
        "imagic-lora-rank-zero", imagic_argv("good.png", "--lora-rank", "0"), 2, "lora_rank must be at least 1, got 0"
    ),
    Case(
        "imagic-batch-size-huge",
        imagic_argv("good.png", "--batch-size", "100000"),
        2,
        "batch_size must be a whole number in [1, 256], got 100000",
    ),
    Case(
        "imagic-seeds-zero",
        imagic_argv("good.png", "--seeds", "0"),
        2,
        "seeds must be a whole number in [1, 100], got 0",
    ),
    Case("imagic-tune-unknown", imagic_argv("good.png", "--tune", "everything"), 2, "invalid choice: 'everything'"),
    Case(
        "imagic-output-is-input",
        ["imagic", "good.png", "--target", TARGET, "--output", "good.png", "--model", MODEL],
        2,
        "refusing to overwrite the input good.png",
    ),
    # interpolate
    Case(
        "interpolate-frames-one",
        interpolate_argv("--frames", "1"),
        2,
        "an interpolation needs at least 2 frames, got 1",
    ),
    Case(
        "interpolate-frames-huge",
        interpolate_argv("--frames", "1000000000"),
        2,
        "frames must be a whole number in [2, 1000], got 1000000000",
    ),
    Case(
        "interpolate-hold-two",
        interpolate_argv("--hold-common", "2"),
        2,
        "hold_common is a fraction of the steps, from 0 to 1, got 2.0",
    ),
    Case(
        "interpolate-layout-negative",
        interpolate_argv("--layout-steps", "-1"),
        2,
        "layout_steps must be at least 0 and below steps (2), got -1",
    ),
    Case(
        "interpolate-guidance-nan",
        interpolate_argv("--guidance-scale", "nan"),
        2,
        "guidance_scale must be a finite number, got nan",
    ),
    Case(
        "interpolate-frame-ms-zero",
        interpolate_argv("--frame-ms", "0"),
        2,
        "frame_ms must be a whole number in [10, 60000], got 0",
    ),
    Case(
        "interpolate-noise-seed-negative",
        interpolate_argv("--noise-seed-b", "-5"),
        2,
        "seed must be a whole number in [0,",
    ),
    # style
    Case("style-amount-nan", style_argv("--amount", "nan"), 2, "amount must be a finite number, got nan"),
    Case(
        "style-amount-huge",
        style_argv("--amount", "1e9"),
        2,
        "amount must be a finite number in [-10, 10], got 1000000000.0",
    ),
    Case("style-sweep-words", style_argv("--sweep", "a:b:c"), 2, "bad sweep 'a:b:c'; write START:STOP:COUNT"),
    Case(
        "style-sweep-huge",
        style_argv("--sweep", "0:1:100000"),
        2,
        "the sweep's count must be a whole number in [1, 1000], got 100000",
    ),
    Case("style-sweep-nan", style_argv("--sweep", "0:nan:3"), 2, "the sweep's stop must be a finite number, got nan"),
    Case("style-direction-unknown", style_argv("--direction", "sideways"), 2, "invalid choice: 'sideways'"),
    # instruct (the bundled instruct model unless --model names another)
    Case(
        "instruct-4-channel-model",
        instruct_argv("good.png", "--model", MODEL),
        2,
        "the model is not an instruct model: its UNet takes 4 input channels",
    ),
    Case("instruct-empty-instruction", instruct_argv(instruction="  "), 2, "the instruction is empty"),
    Case("instruct-image-missing", instruct_argv("nothing.png"), 2, "image not found: nothing.png"),
    Case("instruct-image-bomb", instruct_argv("bomb.png"), 2, "the limit is 2048 pixels on a side"),
    Case(
        "instruct-image-guidance-nan",
        instruct_argv("good.png", "--image-guidance-scale", "nan"),
        2,
        "image_guidance_scale must be a finite number, got nan",
    ),
    Case(
        "instruct-steps-zero",
        instruct_argv("good.png", "--steps", "0"),
        2,
        "steps must be a whole number in [1, 1000], got 0",
    ),
    Case(
        "instruct-output-is-input",
        ["instruct", "good.png", "make it red", "--output", "good.png"],
        2,
        "refusing to overwrite the input good.png",
    ),
    Case(
        "instruct-output-not-png",
        ["instruct", "good.png", "make it red", "--output", "out/o.jpg"],
        2,
        "the output must be a .png file",
    ),
    # train
    Case("train-recipe-missing", train_argv("no-such.json"), 2, "cannot read the recipe no-such.json"),
    Case(
        "train-recipe-not-json", train_argv("recipe-train-bad.json"), 2, "cannot read the recipe recipe-train-bad.json"
    ),
    Case(
        "train-recipe-unknown-field", train_argv("recipe-train-field.json"), 2, "unknown recipe fields ['warp_factor']"
    ),
    Case("train-recipe-list", train_argv("recipe-train-list.json"), 2, "cannot read the recipe recipe-train-list.json"),
    Case(
        "train-recipe-nan",
        train_argv("recipe-train-nan.json"),
        2,
        "recipe field vae_steps must be a whole number, got nan",
    ),
    Case(
        "train-resolution-zero",
        train_argv("recipe-train.json", "--resolution", "0"),
        2,
        "resolution must be a whole number in [8, 2048], got 0",
    ),
    Case(
        "train-data-unknown",
        train_argv("recipe-train.json", "--data", "mnist"),
        2,
        "argument --data: invalid choice: 'mnist'",
    ),
    Case(
        "train-output-is-a-file",
        ["train", "model", "--recipe", "recipe-train.json", "--output", "good.png"],
        2,
        "--output good.png is a file, not a folder",
    ),
    Case(
        "train-clip-steps-negative",
        ["train", "clip", "--output", "run", "--steps", "-1"],
        2,
        "steps must be a whole number in [0, 1e+07], got -1",
    ),
    Case(
        "train-clip-lr-nan",
        ["train", "clip", "--output", "run", "--lr", "nan"],
        2,
        "recipe field lr must be a finite number, got nan",
    ),
    # batch
    Case("batch-jobs-missing", batch_argv("no-such.jsonl"), 2, "jobs file not found: no-such.jsonl"),
    Case("batch-jobs-empty", batch_argv("jobs-empty.jsonl"), 2, "jobs-empty.jsonl holds no jobs"),
    Case("batch-jobs-random-bytes", batch_argv("jobs-random.jsonl"), 2, "cannot read jobs file jobs-random.jsonl"),
    Case("batch-jobs-not-json", batch_argv("jobs-notjson.jsonl"), 1, "line 1: not valid JSON"),
    Case("batch-jobs-list-line", batch_argv("jobs-list.jsonl"), 1, "line 1: a job must be a JSON object"),
    Case("batch-job-no-prompt", batch_argv("jobs-noprompt.jsonl"), 1, "a generate job needs a 'prompt' field"),
    Case("batch-id-traversal", batch_argv("jobs-traversal.jsonl"), 1, "bad id '../escape'"),
    Case("batch-id-absolute", batch_argv("jobs-absolute.jsonl"), 1, "bad id '/tmp/abs'"),
    Case("batch-id-duplicate", batch_argv("jobs-dup.jsonl"), 2, "duplicate job id 'a' on lines 1 and 2"),
    Case("batch-id-clash", batch_argv("jobs-clash.jsonl"), 2, "would both write x.error.json"),
    Case("batch-task-unknown", batch_argv("jobs-task.jsonl"), 1, "unknown task 'teleport'"),
    Case("batch-field-unknown", batch_argv("jobs-field.jsonl"), 1, "unknown field(s) ['stepz'] for task 'generate'"),
    Case("batch-nan", batch_argv("jobs-nan.jsonl"), 1, "guidance_scale must be a finite number, got nan"),
    Case(
        "batch-steps-huge", batch_argv("jobs-steps.jsonl"), 1, "steps must be a whole number in [1, 1000], got 10000000"
    ),
    Case("batch-wrong-type", batch_argv("jobs-type.jsonl"), 1, "field 'steps' has the wrong type: 'two'"),
    Case("batch-scheduler-unknown", batch_argv("jobs-sched.jsonl"), 1, "unknown scheduler 'warp'"),
    Case("batch-edit-no-image", batch_argv("jobs-edit-noimage.jsonl"), 1, "an edit job needs a 'image' field"),
    Case(
        "batch-edit-empty-image", batch_argv("jobs-edit-badimage.jsonl"), 1, "image file is empty (0 bytes): empty.png"
    ),
    Case(
        "batch-edit-identical-captions",
        batch_argv("jobs-edit-same.jsonl"),
        1,
        "the source and target captions name no change",
    ),
    Case("batch-out-is-a-file", batch_argv("jobs-steps.jsonl"), 2, "cannot write to output folder out", out_is_a_file),
    Case(
        "batch-out-unwritable",
        ["batch", "jobs-steps.jsonl", "--out", "/proc/out", "--model", MODEL],
        2,
        "cannot write to output folder /proc/out",
    ),
    # replay
    Case("replay-missing", replay_argv("no-such.png"), 2, "image not found: no-such.png"),
    Case("replay-empty", replay_argv("empty.png"), 2, "image file is empty (0 bytes): empty.png"),
    Case("replay-not-an-image", replay_argv("text.png"), 2, "cannot read image text.png"),
    Case("replay-no-recipe", replay_argv("plain.png"), 2, "plain.png carries no recipe"),
    Case("replay-recipe-not-json", replay_argv("recipe-notjson.png"), 2, "the 'retouch' chunk is not valid JSON"),
    Case("replay-recipe-list", replay_argv("recipe-list.png"), 2, "the 'retouch' chunk is not a JSON object"),
    Case("replay-recipe-1000-images", replay_argv("recipe-many.png"), 2, "makes 1000 images; a PNG's recipe makes 1"),
    Case(
        "replay-recipe-nan",
        replay_argv("recipe-nan.png"),
        2,
        "bad recipe: guidance_scale must be a finite number, got nan",
    ),
    Case("replay-recipe-task", replay_argv("recipe-task.png"), 2, "bad recipe: unknown task 'teleport'"),
    Case("replay-recipe-scheduler", replay_argv("recipe-sched.png"), 2, "unknown scheduler 'warp'"),
    Case(
        "replay-recipe-steps",
        replay_argv("recipe-steps.png"),
        2,
        "bad recipe: steps must be a whole number in [1, 1000], got 100000000",
    ),
    Case("replay-edit-escapes", replay_argv("recipe-edit-escape.png"), 2, "image not found: ../../../etc/passwd"),
    Case(
        "replay-output-is-input",
        ["replay", "recipe-good.png", "--output", "recipe-good.png", "--model", MODEL],
        2,
        "refusing to overwrite the input recipe-good.png",
    ),
]


@pytest.fixture
def inputs(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding every bad file; the test runs inside it."""
    for name, data in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def hashes(root: Path) -> dict[str, str]:
    return {name: hashlib.sha256((root / name).read_bytes()).hexdigest() for name in FILES}


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda case: case.name)
def test_cli_refuses_bad_input(case, inputs, tiny_model_dir, capsys):
    if case.prepare:
        case.prepare(inputs)
    before = hashes(inputs)
    argv = ["--quiet", *(str(tiny_model_dir) if arg == MODEL else arg for arg in case.argv)]
    try:
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's own refusal: usage and message on stderr, exit 2
            code = e.code
    finally:
        if (inputs / "out").is_dir():
            (inputs / "out").chmod(0o755)
    captured = capsys.readouterr()
    err = captured.err
    # a batch job's refusal is in its error report; the run goes on with the other jobs and exits 1
    reports = "".join(p.read_text() for p in sorted(Path("out").glob("*.json"))) if Path("out").is_dir() else ""
    messages = err + captured.out + reports
    assert "Traceback" not in messages
    assert hashes(inputs) == before, "an input file was modified"
    assert not Path("/tmp/retouch-pwned").exists()
    assert code == case.code, messages
    assert case.message in messages


@dataclass
class ApiCase:
    name: str
    call: Callable  # (model, folder) -> anything; must raise RetouchError
    message: str


def _api(name: str, *args, **kwargs) -> Callable:
    import retouch
    from retouch.edit.api import edit

    function = edit if name == "edit" else getattr(retouch, name)
    return lambda model, root: function(model, *args, **kwargs)


API_CASES = [
    ApiCase("generate-steps-zero", _api("generate", "a red circle", steps=0), "steps must be"),
    ApiCase("generate-guidance-nan", _api("generate", "a red circle", guidance_scale=float("nan")), "finite"),
    ApiCase("generate-size-odd", _api("generate", "a red circle", width=33, height=32), "multiple of 8"),
    ApiCase("generate-seed-negative", _api("generate", "a red circle", seed=-1), "seed must be"),
    ApiCase("generate-images-string", _api("generate", "a red circle", num_images="2"), "num_images must be"),
    ApiCase("edit-empty-file", _api("edit", "empty.png", SOURCE, TARGET, steps=STEPS), "image file is empty"),
    ApiCase(
        "edit-array-shape",
        _api("edit", np.zeros((4, 4, 7), np.uint8), SOURCE, TARGET, steps=STEPS),
        "an image array must be uint8",
    ),
    ApiCase("edit-object", _api("edit", 42, SOURCE, TARGET, steps=STEPS), "image must be a file path"),
    ApiCase("edit-strength-bool", _api("edit", "good.png", SOURCE, TARGET, strength=True), "strength must be"),
    ApiCase("edit-tries-huge", _api("edit", "good.png", SOURCE, TARGET, tries=10**6), "tries must be"),
    ApiCase("edit-empty-target", _api("edit", "good.png", SOURCE, "  ", steps=STEPS), "target caption is empty"),
    ApiCase("imagic-eta-string", _api("imagic", "good.png", TARGET, eta="lots"), "eta must be"),
    ApiCase("imagic-bomb", _api("imagic", "bomb.png", TARGET, embed_steps=1, tune_steps=1), "2048 pixels"),
    ApiCase("interpolate-frames-float", _api("interpolate", "a", "b", frames=2.5, steps=STEPS), "frames must be"),
    ApiCase(
        "interpolate-hold-nan", _api("interpolate", "a", "b", hold_common=float("nan"), steps=STEPS), "hold_common"
    ),
    ApiCase("stylize-amount-inf", _api("stylize", "a red circle", "pastel", amount=float("inf")), "finite"),
    ApiCase("stylize-direction", _api("stylize", "a red circle", "pastel", direction="up"), "direction"),
]


@pytest.mark.parametrize("case", API_CASES, ids=lambda case: case.name)
def test_api_refuses_bad_input(case, inputs, tiny_model):
    before = hashes(inputs)
    with pytest.raises(RetouchError) as refused:
        case.call(tiny_model, inputs)
    assert case.message in str(refused.value)
    assert hashes(inputs) == before, "an input file was modified"
