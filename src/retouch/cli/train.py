"""``retouch train model`` (a latent diffusion model), ``retouch train clip`` (a shapes-64 CLIP), and
the personalization methods: ``retouch train textual-inversion|dreambooth|custom-diffusion|lora``."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from retouch.cli.common import add_global_flags, add_model_arguments, emit
from retouch.errors import RetouchError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train models from scratch", description=__doc__)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    model = kinds.add_parser(
        "model",
        help="a latent diffusion model: tokenizer, VAE, text encoder, UNet",
        description="Train a small latent diffusion model (word-level CLIP tokenizer, AutoencoderKL f=4, "
        "CLIP text encoder, UNet2DConditionModel) from scratch and write a diffusers folder. Runs on one "
        "process or many with `accelerate launch -m retouch train model ...`.",
    )
    model.add_argument("--recipe", help="JSON recipe (fields of retouch.train.LDMConfig); default: built-in")
    model.add_argument("--output", required=True, help="output folder (diffusers format)")
    model.add_argument("--resume", action="store_true", help="continue a run in --output from its checkpoint")
    model.add_argument("--data", choices=("shapes64", "imagefolder", "fashion-mnist"), help="data source")
    model.add_argument("--data-dir", help="image folder with metadata.jsonl, or the Fashion-MNIST .gz files")
    model.add_argument("--resolution", type=int, help="picture side in pixels")
    model.add_argument("--vae-steps", type=int)
    model.add_argument("--unet-steps", type=int)
    model.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps (default 200)")
    model.add_argument("--num-latents", type=int, help="how many pictures to pre-encode")
    add_global_flags(model)
    model.set_defaults(run=run)
    add_instruct_parser(kinds)
    clip = kinds.add_parser(
        "clip",
        help="a small CLIP (image and text towers) on shapes-64, the judge and metric model",
        description="Train a small CLIP on procedural shapes-64 scenes with the contrastive loss and write a "
        "folder that CLIPModel/CLIPProcessor.from_pretrained load; prints caption-to-image retrieval top-1.",
    )
    clip.add_argument("--output", required=True, help="output folder (transformers format)")
    clip.add_argument("--steps", type=int, help="training steps (default 4000)")
    clip.add_argument("--batch-size", type=int, help="scenes per step (default 128)")
    clip.add_argument("--lr", type=float, help="AdamW learning rate (default 5e-4)")
    clip.add_argument("--seed", type=int)
    clip.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps (default 500)")
    clip.add_argument("--resume", action="store_true", help="continue a run in --output from its checkpoint")
    clip.add_argument("--device", default=None, help="torch device (default: cuda if present, else cpu)")
    add_global_flags(clip)
    clip.set_defaults(run=run_clip)
    for method, (summary, description) in CONCEPT_HELP.items():
        add_concept_parser(kinds, method, summary, description)
    return parser


CONCEPT_HELP = {
    "textual-inversion": ("a new token's embedding, the model frozen (Gal et al. 2022)",
                          "Learn the embedding of a new token from 3-20 pictures; writes learned_embeds.safetensors "
                          "(diffusers) and an A1111 copy."),
    "dreambooth": ("fine-tune the model on 'a <token> <class>' with prior preservation (Ruiz et al. 2022)",
                   "Fine-tune the UNet (and with --train-text-encoder the text encoder) on 'a <token> <class word>', "
                   "with a prior-preservation loss on the base model's own pictures of the class; writes a whole "
                   "diffusers folder, or with --lora LoRA files (diffusers and kohya)."),
    "custom-diffusion": ("cross-attention keys/values and modifier tokens, several concepts (Kumari et al. 2023)",
                         "Learn the cross-attention key/value projections and one token per concept (--token and "
                         "--images repeated), with prior preservation; writes pytorch_custom_diffusion_weights"
                         ".safetensors and the tokens' embeddings. Merge separate runs with 'retouch concept merge'."),
    "lora": ("LoRA adapters on the UNet and text encoder, and the token (peft)",
             "Learn low-rank adapters and the new token's embedding; writes pytorch_lora_weights.safetensors "
             "(diffusers), a kohya copy (A1111, ComfyUI) and the token's embedding."),
}


def add_concept_parser(kinds: argparse._SubParsersAction, method: str, summary: str, description: str) -> None:
    """One personalization subcommand; every method shares the data, loop and output flags."""
    parser = kinds.add_parser(method, help=summary, description=description)
    many = method == "custom-diffusion"
    repeat = " (repeat it, with --token, for several concepts)" if many else ""
    parser.add_argument("--images", action="append", required=True, metavar="DIR",
                        help="3-20 pictures, optionally metadata.jsonl {file_name, text} rows with the token" + repeat)
    parser.add_argument("--token", action="append", required=True, help="the new token, like '<star>'" + repeat)
    parser.add_argument("--output", required=True, metavar="OUT", help="new folder for the concept")
    word_help = "the concept's class, captions 'a <token> <class word>'"
    if method in ("dreambooth", "custom-diffusion", "lora"):
        parser.add_argument("--class-word", action="append", default=[], help=word_help + " and class images")
        parser.add_argument("--num-class-images", type=int, help="prior preservation: class images (default 0: off)")
        parser.add_argument("--prior-loss-weight", type=float, help="prior preservation's weight (default 1.0)")
        parser.add_argument("--class-prompt", action="append", dest="class_prompts",
                            help="the class images' prompt (default 'a <class word>'; repeat it to cycle several)")
        parser.add_argument("--class-images-dir", help="their cache (default ~/.cache/retouch/class-images)")
    else:
        parser.add_argument("--class-word", action="append", default=[], help=word_help)
    if method != "dreambooth":
        parser.add_argument("--init-word", help="the token starts as this word's embedding (one token)")
    if method == "textual-inversion":
        parser.add_argument("--num-vectors", type=int, default=1, help="vectors for the token (default 1)")
    if method == "dreambooth":
        parser.add_argument("--lora", action="store_true", help="train LoRA adapters instead of every weight")
        parser.add_argument("--train-text-encoder", action="store_true", help="the text encoder learns too")
    if method in ("dreambooth", "lora"):
        parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
        parser.add_argument("--conv", action="store_true",
                            help="LoRA on the UNet's convolutions and feed-forward layers too, not only attention "
                                 "(kohya's LoCon; diffusers, A1111 and ComfyUI load it)")
    if method == "lora":
        parser.add_argument("--no-text-encoder", action="store_true", help="adapters on the UNet only")
    parser.add_argument("--steps", type=int, help="optimizer steps (default 400)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the method's usual rate)")
    parser.add_argument("--batch-size", type=int, help="pictures a step (default 4)")
    parser.add_argument("--seed", type=int, help="seeds every draw (default 0)")
    parser.add_argument("--checkpoint-every", type=int, help="steps between checkpoints (default 100; 0: none)")
    parser.add_argument("--resume", action="store_true", help="continue the unfinished run in --output")
    parser.add_argument("--gradient-checkpointing", action="store_true",
                        help="recompute the UNet's activations in the backward pass: less memory, slower steps")
    add_model_arguments(parser)
    add_global_flags(parser)
    parser.set_defaults(run=run_concept, method=method)


def run_concept(args: argparse.Namespace) -> int:
    from accelerate import PartialState

    from retouch.models.loading import load_model
    from retouch.train.concept import ConceptSettings
    from retouch.train.personalize import personalize

    fields = ("steps", "lr", "batch_size", "seed", "checkpoint_every", "num_class_images", "prior_loss_weight",
              "class_images_dir")
    settings = ConceptSettings(**{k: getattr(args, k) for k in fields if getattr(args, k, None) is not None},
                               class_prompts=tuple(getattr(args, "class_prompts", None) or ()),
                               gradient_checkpointing=args.gradient_checkpointing)
    options = {k: getattr(args, k) for k in ("init_word", "num_vectors", "lora", "train_text_encoder", "rank", "conv")
               if getattr(args, k, None) is not None}
    if getattr(args, "no_text_encoder", False):
        options["train_text_encoder"] = False
    model = load_model(args.model, args.device, args.dtype, args.config)
    result = personalize(model, args.method, args.images, args.token, args.output, class_words=args.class_word,
                         settings=settings, resume=args.resume, progress=not (args.quiet or args.json), **options)
    if not PartialState().is_main_process:  # under accelerate launch: one report, from the main process
        return 0
    figures = result.manifest["figures"]
    emit(args, {"concept": str(result.folder), **result.manifest},
         [f"{args.method}: {', '.join(result.manifest['tokens'])} written to {result.folder} "
          f"({figures['train_seconds']:.0f} s, {figures['seconds_per_step']:.3f} s/step, "
          f"final loss {figures['final_loss']:.4f}; use it with --concept {result.folder})"])
    return 0


def run_clip(args: argparse.Namespace) -> int:
    from retouch.train.clip import ClipTrainConfig, train_clip

    overrides = {
        k: getattr(args, k)
        for k in ("steps", "batch_size", "lr", "seed", "checkpoint_every")
        if getattr(args, k) is not None
    }
    config = ClipTrainConfig(**overrides)
    config.check()
    check_output_folder(Path(args.output), args.resume)
    try:
        result = train_clip(
            config, args.output, args.resume, args.device, log=lambda m: None if args.json or args.quiet else print(m)
        )
    except FileExistsError as err:
        raise RetouchError(
            f"{args.output} already holds a training run: pass --resume to continue it, or pick another --output"
        ) from err
    emit(args, {"model": str(result.folder), "steps": result.steps, "final_loss": result.final_loss,
                "retrieval_top1": result.retrieval_top1, "seconds": result.seconds},
         [f"CLIP written to {result.folder}; caption-to-image top-1 among 100 scenes: {result.retrieval_top1:.1%}"])
    return 0


def run(args: argparse.Namespace) -> int:
    from retouch.train.ldm import LDMConfig, train_ldm_model

    try:
        config = LDMConfig.from_json(args.recipe) if args.recipe else LDMConfig()
    except (OSError, ValueError, TypeError) as err:
        raise RetouchError(f"cannot read the recipe {args.recipe}: {err}") from err
    overrides = {
        k: getattr(args, k)
        for k in ("data", "data_dir", "resolution", "vae_steps", "unet_steps", "checkpoint_every", "num_latents")
        if getattr(args, k) is not None
    }
    config = replace(config, **overrides)
    config.check()
    output = check_output_folder(Path(args.output), args.resume)
    try:
        folder = train_ldm_model(config, output, quiet=args.quiet, log=lambda m: None if args.json else print(m))
    except (FileNotFoundError, ValueError) as err:
        raise RetouchError(str(err)) from err
    emit(args, {"model": str(folder), "recipe": json.loads(config.to_json())},
         [f"model written to {folder} (load it with --model {folder})"])
    return 0


def add_instruct_parser(kinds: argparse._SubParsersAction) -> None:
    """``retouch train instruct``: a text-to-image model fine-tuned into an InstructPix2Pix model."""
    instruct = kinds.add_parser(
        "instruct",
        help="fine-tune a model into an instruct model (InstructPix2Pix)",
        description="Fine-tune a text-to-image model into an InstructPix2Pix model as the paper's training "
        "script does: conv_in widened to 8 channels (new weights zero), conditioning dropout of the text, the "
        "picture and both, EMA; the tokenizer gains the instructions' words. Writes a diffusers folder "
        "(StableDiffusionInstructPix2PixPipeline). Runs on one process or many with `accelerate launch -m "
        "retouch train instruct ...`.",
    )
    instruct.add_argument("--recipe", help="JSON recipe (fields of retouch.train.instruct.InstructConfig)")
    instruct.add_argument(
        "--base",
        help="the text-to-image model to start from (default: shapes-64), or an instruct model to train further",
    )
    instruct.add_argument("--output", required=True, help="output folder (diffusers format)")
    instruct.add_argument(
        "--data",
        help="instruction triplets: shapes64-instructions (default: rendered by the world) or generated (the "
        "paper's route: the grammar's caption pairs drawn by --base with prompt-to-prompt, CLIP-filtered)",
    )
    instruct.add_argument("--resume", action="store_true", help="continue a run in --output from its checkpoint")
    instruct.add_argument("--steps", type=int)
    instruct.add_argument("--batch-size", type=int)
    instruct.add_argument("--num-triplets", type=int, help="how many triplets to pre-encode")
    instruct.add_argument("--checkpoint-every", type=int, help="checkpoint every N steps")
    add_global_flags(instruct)
    instruct.set_defaults(run=run_instruct)


def run_instruct(args: argparse.Namespace) -> int:
    from retouch.train.instruct import InstructConfig, train_instruct_model

    try:
        config = InstructConfig.from_json(args.recipe) if args.recipe else InstructConfig()
    except (OSError, ValueError, TypeError) as err:
        raise RetouchError(f"cannot read the recipe {args.recipe}: {err}") from err
    names = ("base", "data", "steps", "batch_size", "num_triplets", "checkpoint_every")
    config = replace(config, **{k: getattr(args, k) for k in names if getattr(args, k) is not None})
    output = check_output_folder(Path(args.output), args.resume)
    try:
        folder = train_instruct_model(
            config, output, quiet=args.quiet, log=lambda m: None if args.json else print(m)
        )
    except (FileNotFoundError, ValueError) as err:
        raise RetouchError(str(err)) from err
    emit(args, {"model": str(folder), "recipe": json.loads(config.to_json())},
         [f"instruct model written to {folder} (use it with retouch instruct --model {folder})"])
    return 0


def check_output_folder(output: Path, resume: bool) -> Path:
    """Refuse a path that is a file, a folder another trainer holds, or one holding a run when
    --resume is not given; all before any work."""
    from retouch.io.locks import folder_busy
    from retouch.train.checkpoint import TRAIN_LOCK

    if output.exists() and not output.is_dir():
        raise RetouchError(f"--output {output} is a file, not a folder; give a new or existing folder")
    if busy := folder_busy(output, TRAIN_LOCK, "retouch train"):
        raise RetouchError(busy)
    if (output / "work").exists() and not resume:
        raise RetouchError(
            f"{output} already holds a training run: pass --resume to continue it, or pick another --output"
        )
    return output
