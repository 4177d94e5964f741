"""Benchmark personalization (``retouch train textual-inversion|dreambooth|custom-diffusion|lora``)
on the shapes-64 world.

    nice python benchmarks/bench_concepts.py --out outputs/bench_concepts.json
    nice python benchmarks/bench_concepts.py --methods textual-inversion --prompts 20   # a quick look
    python benchmarks/bench_concepts.py --methods dreambooth --split 1 --prompts 20 --train-prompts \
        --override '{"steps": 600, "lr": 5e-4, "prior": 0}'   # a dev-split look at other settings
    python benchmarks/bench_concepts.py --model /tmp/tiny64 --steps 2 --prompts 2 --sample-steps 2

Each method is taught ``<star>`` from 5 rendered pictures (varied colour, background, size and
position; captions ``a {size} {color} <star> on {a|an} {bg} background``), on the bundled model, then:
- concept: held-out prompts of the same form, every (colour, background) pair unseen together in
  training; the oracle reads each picture with the reserved shapes among its candidates: shape read
  back as star, colour, background (and size) accuracy;
- language drift: canonical prompts of the training shapes with the concept loaded, all-fields
  accuracy against the base model's on the same prompts and seeds (``--split 1`` draws other
  prompts than the test split's);
- time: training seconds, steps and seconds per step.
Custom Diffusion also learns ``<star>`` and ``<diamond>`` together (one joint run) and merges two
single runs (``retouch concept merge``); each concept is scored on its own prompts.
With ``--edit N``, each trained ``<star>`` is also edited into N canonical pictures of the
training shapes (``edit`` with source caption ``a large red circle on ...`` and target ``a large
red <star> on ...``): success = the oracle (reserved shapes among its candidates) reads the
target scene with the star in place (centre within 4 px); PSNR against the input outside the
true edit region (old and new object) grown by 2 px.
Prints figures; never fails on them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_shapes_edit import preservation_psnr
from PIL import Image
from safetensors.torch import load_file
from shapes_scoring import in_place, read_back

from retouch.core.generate import generate
from retouch.edit.api import edit
from retouch.models.loading import load_model
from retouch.train.concept import ConceptSettings
from retouch.train.concept_merge import merge_concepts
from retouch.train.custom_diffusion import load_custom_weights
from retouch.train.finetune import add_token
from retouch.train.personalize import personalize
from retouch.worlds import shapes64 as w

TRAIN_SEED, PROMPT_SEED, DRIFT_SEED, PRIOR_SEED, EDIT_SEED = 101, 202, 303, 404, 505
# Settings per method on the bundled model (steps, learning rate, options, class images), chosen
# after one look at 20 dev prompts (--split 1) with 150 steps; batch 4 everywhere. Class images:
# the base model's own pictures of random canonical captions (all training shapes).
METHODS: dict[str, dict[str, Any]] = {
    "textual-inversion": {"steps": 400, "lr": 5e-3, "options": {}},
    # --conv: 2026-12-05, dev look; prior weight 5: 2026-12-05, dev drift 80.0% -> 91.7% (60 dev prompts)
    "lora": {"steps": 400, "lr": 2e-3, "options": {"conv": True}, "prior": 40, "prior_weight": 5.0},
    "dreambooth": {"steps": 300, "lr": 1e-4, "options": {}, "prior": 40},
    "custom-diffusion": {"steps": 400, "lr": 5e-4, "options": {}, "prior": 40},  # 2e-3 before 2026-12-05's dev look
    # variants (--methods NAME): the token learns too
    "dreambooth-text-encoder": {
        "method": "dreambooth",
        "steps": 300,
        "lr": 1e-4,
        "prior": 40,
        "options": {"train_text_encoder": True},
    },
    "lora-unet": {"method": "lora", "steps": 600, "lr": 2e-3, "prior": 40, "options": {"train_text_encoder": False}},
    "lora-attention": {"method": "lora", "steps": 400, "lr": 2e-3, "options": {}, "prior": 40},  # before --conv
}
CLASS_WORD = {"star": "cross", "diamond": "square"}  # class images: the nearest training shape


def concept_caption(scene: w.Scene, token: str) -> str:
    return scene.caption().replace(scene.shape, token, 1)


def training_scenes(shape: str, seed: int) -> list[w.Scene]:
    """5 plain scenes of ``shape``: colours, backgrounds, sizes and positions all varied."""
    rng = np.random.default_rng(seed)
    colors = rng.permutation(w.COLORS)
    scenes = []
    for i in range(5):
        color, background = str(colors[i]), str(colors[(i + 5) % len(colors)])
        scenes.append(
            w.sample_scene(
                rng, shapes=(shape,), color=color, background=background, size=("small", "large")[i % 2], style="plain"
            )
        )
    return scenes


def write_pictures(folder: Path, scenes: list[w.Scene], token: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, scene in enumerate(scenes):
        Image.fromarray(scene.render()).save(folder / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": concept_caption(scene, token)})
    (folder / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def held_out_scenes(shape: str, train: list[w.Scene], n: int, seed: int) -> list[w.Scene]:
    """``n`` plain scenes of ``shape`` whose (colour, background) pair no training picture has."""
    seen = {(s.color, s.background) for s in train}
    rng, scenes = np.random.default_rng(seed), []
    while len(scenes) < n:
        scene = w.sample_scene(rng, shapes=(shape,), style="plain")
        if (scene.color, scene.background) not in seen:
            scenes.append(scene)
    return scenes


def score(model, scenes: list[w.Scene], prompts: list[str], steps: int, reserved: bool) -> dict[str, Any]:
    """Oracle accuracy per field of the pictures drawn from ``prompts`` (seed i for prompt i)."""
    images = [np.asarray(generate(model, p, seed=i, steps=steps).images[0]) for i, p in enumerate(prompts)]
    acc: dict[str, Any] = {k: round(v, 4) for k, v in w.oracle_accuracy(images, scenes, reserved=reserved).items()}
    read = [str(w.read_scene(image, reserved).shape) for image in images]
    acc["shapes_read"] = {shape: read.count(shape) for shape in sorted(set(read))}
    return acc


def concept_score(model, shape: str, token: str, scenes: list[w.Scene], steps: int) -> dict[str, Any]:
    return score(model, scenes, [concept_caption(s, token) for s in scenes], steps, reserved=True)


def edit_score(model, n: int, seed: int) -> dict[str, Any]:
    """``n`` canonical pictures edited into ``<star>`` (item 4 of the issue), at edit's defaults."""
    rng = np.random.default_rng(seed)
    hits, psnrs = [], []
    for i in range(n):
        pair = w.make_edit(w.sample_scene(rng, style="plain"), "shape", "star")
        source = pair.source.render()
        output = np.asarray(
            edit(model, source, pair.source_caption, concept_caption(pair.target, "<star>"), seed=i).image
        )
        reading = w.read_scene(output, reserved=True)
        hits.append(all(reading.matches(pair.target).values()) and in_place(output, pair.target))
        psnrs.append(preservation_psnr(source, output, pair.mask))
    return {"n": n, "success": round(float(np.mean(hits)), 4), "psnr_outside_median": float(np.median(psnrs))}


def vae_ceiling(model, n: int) -> dict[str, Any]:
    """Per shape, how often the oracle (reserved shapes among its candidates) reads ``n`` rendered
    plain scenes back from the VAE's reconstruction (encoder mode, decoder): what a method that
    learns a shape from the encoder's latents gets even when its UNet draws them exactly."""
    vae = model.pipe.vae
    return read_back(torch.no_grad()(lambda x: vae.decode(vae.encode(x).latent_dist.mode()).sample), n)


def drift_score(model, n: int, steps: int, split: int = 0) -> dict[str, Any]:
    """Canonical prompts of the training shapes; ``split`` 1 (dev) draws other prompts than 0 (test)."""
    rng = np.random.default_rng(DRIFT_SEED + split)
    scenes = [w.sample_scene(rng, style="plain") for _ in range(n)]
    return score(model, scenes, [s.caption() for s in scenes], steps, reserved=False)


def train(args, method: str, shapes: list[str], folder: Path, pictures: dict[str, Path]):
    spec = {**METHODS[method], **args.override}
    prior_rng = np.random.default_rng(PRIOR_SEED)  # the prior: the model's own pictures of canonical captions
    prior_prompts = tuple(w.sample_scene(prior_rng, style="plain").caption() for _ in range(spec.get("prior", 0)))
    settings = ConceptSettings(
        steps=args.steps or spec["steps"],
        lr=spec["lr"],
        batch_size=4,
        seed=0,
        checkpoint_every=0,
        num_class_images=spec.get("prior", 0),
        class_steps=args.sample_steps,
        class_prompts=prior_prompts,
        prior_loss_weight=spec.get("prior_weight", 1.0),
    )
    model = load_model(args.model, device="cpu")
    start = time.perf_counter()
    result = personalize(
        model,
        spec.get("method", method),
        [pictures[s] for s in shapes],
        [f"<{s}>" for s in shapes],
        folder,
        class_words=[CLASS_WORD[s] for s in shapes],
        settings=settings,
        **spec["options"],
    )
    return result, time.perf_counter() - start


def load_merged(args, folder: Path):
    """The base model with a merged Custom Diffusion concept loaded (tokens, key/value weights)."""
    model = load_model(args.model, device="cpu")
    for token, vectors in load_file(folder / "learned_embeds.safetensors").items():
        add_token(model.pipe, token, vectors)
    load_custom_weights(model.pipe.unet, load_file(folder / "pytorch_custom_diffusion_weights.safetensors"))
    return model


def run(args) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-concepts-"))
    train_scenes = {s: training_scenes(s, TRAIN_SEED + i) for i, s in enumerate(("star", "diamond"))}
    pictures = {s: write_pictures(work / s, sc, f"<{s}>") for s, sc in train_scenes.items()}
    held = {s: held_out_scenes(s, train_scenes[s], args.prompts, PROMPT_SEED + args.split) for s in train_scenes}
    report: dict[str, Any] = {"prompts": args.prompts, "split": args.split, "sample_steps": args.sample_steps,
                              "override": args.override, "methods": {}}
    base = load_model(args.model, device="cpu")
    if args.vae_ceiling:
        report["vae_ceiling"] = vae_ceiling(base, args.vae_ceiling)
        print("VAE round trip, shape read back:", json.dumps(report["vae_ceiling"]), flush=True)
    if not args.methods and not args.multi:
        return report
    report["base_drift"] = drift_score(base, args.prompts, args.sample_steps, args.split)
    print("base model, canonical prompts:", report["base_drift"], flush=True)
    for method in args.methods:
        result, seconds = train(args, method, ["star"], work / method, pictures)
        figures = result.manifest["figures"]
        row = {
            "steps": result.manifest["settings"]["steps"],
            "lr": result.manifest["settings"]["lr"],
            "num_class_images": result.manifest["settings"]["num_class_images"],
            "train_seconds": figures["train_seconds"],
            "seconds_per_step": figures["seconds_per_step"],
            "total_seconds": round(seconds, 1),
            "star": concept_score(result.model, "star", "<star>", held["star"], args.sample_steps),
            **({"train_prompts": concept_score(result.model, "star", "<star>", train_scenes["star"], args.sample_steps)}
               if args.train_prompts else {}),
            "drift": drift_score(result.model, args.prompts, args.sample_steps, args.split),
        }
        if args.edit:
            row["edit"] = edit_score(result.model, args.edit, EDIT_SEED + args.split)
        report["methods"][method] = row
        print(method, json.dumps(row), flush=True)
    if args.multi:
        report["custom_diffusion_multi"] = multi_concept(args, work, pictures, held)
    return report


def multi_concept(args, work: Path, pictures: dict[str, Path], held: dict[str, list[w.Scene]]) -> dict[str, Any]:
    """<star> and <diamond> by Custom Diffusion: one joint run, and a merge of two single runs."""
    out: dict[str, Any] = {}
    joint, seconds = train(args, "custom-diffusion", ["star", "diamond"], work / "cd-joint", pictures)
    out["joint"] = {s: concept_score(joint.model, s, f"<{s}>", held[s], args.sample_steps) for s in held}
    out["joint"]["train_seconds"] = joint.manifest["figures"]["train_seconds"]
    print("custom-diffusion joint", json.dumps(out["joint"]), flush=True)
    singles = [work / "custom-diffusion"] if (work / "custom-diffusion" / "concept.json").exists() else []
    if not singles:
        singles.append(train(args, "custom-diffusion", ["star"], work / "custom-diffusion", pictures)[0].folder)
    singles.append(train(args, "custom-diffusion", ["diamond"], work / "cd-diamond", pictures)[0].folder)
    merge_concepts(singles, work / "cd-merged", load_model(args.model, device="cpu"))
    merged = load_merged(args, work / "cd-merged")
    out["merged"] = {s: concept_score(merged, s, f"<{s}>", held[s], args.sample_steps) for s in held}
    out["merged_drift"] = drift_score(merged, args.prompts, args.sample_steps, args.split)
    print("custom-diffusion merged", json.dumps(out["merged"]), json.dumps(out["merged_drift"]), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="shapes-64")
    parser.add_argument("--methods", nargs="*", default=list(METHODS)[:4], choices=list(METHODS))
    parser.add_argument("--prompts", type=int, default=60, help="held-out and drift prompts (default 60)")
    parser.add_argument("--split", type=int, default=0, help="0: the test prompts; 1: the dev prompts")
    parser.add_argument("--steps", type=int, help="training steps for every method (default: METHODS')")
    parser.add_argument("--sample-steps", type=int, default=25, help="sampling steps (default 25)")
    parser.add_argument("--multi", action="store_true", help="also Custom Diffusion's <star> + <diamond>")
    parser.add_argument("--edit", type=int, default=0, metavar="N", help="also edit <star> into N pictures")
    parser.add_argument("--vae-ceiling", type=int, default=0, metavar="N",
                        help="also read back N VAE reconstructions of each shape (the methods' ceiling)")
    parser.add_argument("--override", type=json.loads, default={}, metavar="JSON",
                        help="settings replacing every chosen method's (keys: steps, lr, prior, prior_weight, "
                        'options), e.g. \'{"steps": 600, "lr": 5e-4, "prior": 0}\'')
    parser.add_argument("--train-prompts", action="store_true",
                        help="also score the 5 training captions (does the method reproduce its own pictures?)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = run(args)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
