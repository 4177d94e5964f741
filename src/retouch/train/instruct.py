"""Fine-tune a text-to-image model into an InstructPix2Pix model (Brooks et al., 2022), the way
diffusers' ``train_instruct_pix2pix.py`` does:

1. tokenizer: the base's words plus the instructions' (rebuilt word-level), the text encoder's
   embedding matrix grown to match (old rows copied by token, new rows near the old rows' mean);
2. latents: (input, instruction, edited) triplets pre-encoded once: the input's latents unscaled
   (the pipeline's ``prepare_image_latents`` reads them so), the edited picture's scaled;
3. unet: ``conv_in`` widened to 8 input channels (the new weights zero, so training starts from
   the base model), trained with the text encoder on the base's objective, with conditioning
   dropout of the text, the picture and both (so both guidance scales work) and EMA weights;
4. export: a ``StableDiffusionInstructPix2PixPipeline`` folder.

Stages resume as ``retouch train model``'s do (checkpoints survive ``kill -9``); one process or
many under ``accelerate launch``.
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    StableDiffusionInstructPix2PixPipeline,
    UNet2DConditionModel,
)
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from retouch.models.loading import LoadedModel, load_model
from retouch.train.checkpoint import load_checkpoint
from retouch.train.ldm import (
    Log,
    Trainer,
    foreground_weights,
    latent_mask,
    load_pair,
    pair_state,
    pixels_to_tensor,
    plot_curves,
)
from retouch.train.recipe_check import recipe_from_json
from retouch.train.tokenizer import build_clip_tokenizer

LATENT_CHANNELS = 4  # the noisy latents a text-to-image UNet takes
IMAGE_CHANNELS = 4  # the input picture's latents, concatenated after the noisy latents
LOSS_EMPHASES = ("edit", "smaller")  # InstructConfig.loss_emphasis


class TripletSource(Protocol):
    """Where instruction triplets come from (``shapes64-instructions`` from retouch.worlds)."""

    resolution: int

    def sample_triplets(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]: ...

    def vocabulary(self) -> list[str]: ...


@dataclass
class InstructConfig:
    """Everything a run needs; saved as recipe.json beside the model."""

    base: str = "shapes-64"  # bundled name or diffusers folder of the text-to-image model
    data: str = "shapes64-instructions"
    seed: int = 0
    num_triplets: int = 20000
    steps: int = 3000
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 100
    # the paper's script: text dropped when p < 2q, picture dropped when q <= p < 3q (p uniform):
    # q text alone, q both, q picture alone
    conditioning_dropout: float = 0.05
    # share of each sample's loss given to the latent cells the edit may change (0: plain mean);
    # copying the rest is easy, and a small object's recolour is 10% of the picture
    edit_loss_share: float = 0.5
    # which cells get that share: "edit", the edit region; "smaller", the smaller of the edit region
    # and the part it keeps (a background edit's object, which must survive the new background)
    loss_emphasis: str = "edit"
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    new_token_noise: float = 0.1  # new embedding rows: old mean + this x old rows' std x N(0, 1)
    guidance_scale: float = 4.0  # recommended at inference (text), written into retouch.json
    image_guidance_scale: float = 1.5
    inference_steps: int = 20

    def __post_init__(self) -> None:
        if self.loss_emphasis not in LOSS_EMPHASES:
            raise ValueError(f"unknown loss_emphasis {self.loss_emphasis!r}; expected one of {LOSS_EMPHASES}")

    @classmethod
    def from_json(cls, path: str | Path) -> InstructConfig:
        return recipe_from_json(cls, path)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def conditioning_dropout(p: torch.Tensor, prob: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(drop the text, drop the picture) per sample from uniform draws ``p``, as the paper's script:
    text alone for p < q, both for q <= p < 2q, the picture alone for 2q <= p < 3q."""
    drop_text = p < 2 * prob
    drop_image = (p >= prob) & (p < 3 * prob)
    return drop_text, drop_image


def emphasis_mask(region: torch.Tensor, latent_size: int, emphasis: str = "edit") -> torch.Tensor:
    """The cells (n, latent_size, latent_size) that ``edit_loss_share`` weights, from the pixel edit
    regions (n, H, W): the edit region (``"edit"``), or the smaller of it and the part it keeps
    (``"smaller"``: for a background edit, the object), grown by one cell as ``latent_mask`` does."""
    if emphasis not in LOSS_EMPHASES:
        raise ValueError(f"unknown loss_emphasis {emphasis!r}; expected one of {LOSS_EMPHASES}")
    region = region.float()
    if emphasis == "smaller":
        area = region.mean(dim=(1, 2), keepdim=True)
        region = torch.where((area > 0.5) & (area < 1.0), 1.0 - region, region)
    return latent_mask(region, latent_size)


def widen_conv_in(unet: UNet2DConditionModel, extra: int = IMAGE_CHANNELS) -> UNet2DConditionModel:
    """A copy of ``unet`` taking ``extra`` more input channels: the old ``conv_in`` weights copied,
    the new ones zero, so the widened model first predicts exactly what the base did."""
    old = unet.conv_in
    config = {**unet.config, "in_channels": unet.config.in_channels + extra}
    widened = UNet2DConditionModel.from_config(config)
    state = unet.state_dict()
    weight = torch.zeros(old.out_channels, old.in_channels + extra, *old.kernel_size, dtype=old.weight.dtype)
    weight[:, : old.in_channels] = old.weight.detach()
    state["conv_in.weight"] = weight
    widened.load_state_dict(state)
    return widened.to(unet.dtype)


def base_words(tokenizer: CLIPTokenizer) -> list[str]:
    """The whole words of a word-level tokenizer (``build_clip_tokenizer``'s), in id order."""
    vocab = tokenizer.get_vocab()
    words = [t[: -len("</w>")] for t in sorted(vocab, key=vocab.get) if t.endswith("</w>") and len(t) > 5]
    return [w for w in words if len(tokenizer.tokenize(w)) == 1]


def extend_tokenizer(tokenizer: CLIPTokenizer, words: list[str], folder: Path) -> CLIPTokenizer:
    """A word-level tokenizer over ``tokenizer``'s words and ``words``, saved in ``folder``."""
    return build_clip_tokenizer([*base_words(tokenizer), *words], folder, tokenizer.model_max_length)


def resize_token_embeddings(
    text_encoder: CLIPTextModel, old: CLIPTokenizer, new: CLIPTokenizer, seed: int, noise: float = 0.1
) -> CLIPTextModel:
    """Grow ``text_encoder``'s token embeddings from ``old``'s vocabulary to ``new``'s, in place:
    a token both know keeps its row (ids may move); a new one starts at the old rows' mean plus
    ``noise`` x their std of seeded Gaussian noise, so new words start as a typical word, apart."""
    rows = text_encoder.get_input_embeddings().weight.detach()
    old_vocab, new_vocab = old.get_vocab(), new.get_vocab()
    generator = torch.Generator().manual_seed(seed)
    fresh = torch.randn(len(new_vocab), rows.shape[1], generator=generator) * rows.std(0) * noise + rows.mean(0)
    for token, index in new_vocab.items():
        if token in old_vocab:
            fresh[index] = rows[old_vocab[token]]
    embedding = torch.nn.Embedding(len(new_vocab), rows.shape[1])
    embedding.weight.data = fresh.to(rows.dtype)
    text_encoder.set_input_embeddings(embedding)
    text_encoder.config.vocab_size = len(new_vocab)
    text_encoder.config.bos_token_id = new.bos_token_id
    text_encoder.config.eos_token_id = new.eos_token_id
    text_encoder.config.pad_token_id = new.pad_token_id
    return text_encoder


class InstructTrainer(Trainer):
    """``Trainer``'s checkpoints, data seeding and logs, with the instruct stages."""

    config: InstructConfig

    def stages(self, source: TripletSource | None) -> Path:  # type: ignore[override]
        """The instruct stages, under ``Trainer.run``'s lock and recipe check."""
        base = load_model(self.config.base, device="cpu")
        if source is None:
            source = self.registered_source(base)
        tokenizer = self.instruct_tokenizer(base, source)
        inputs, targets, regions, instructions = self.encode_triplets(source, base.pipe.vae)
        unet, text_encoder = self.train_instruct(base, tokenizer, inputs, targets, regions, instructions)
        return self.export_instruct(base, tokenizer, unet, text_encoder)

    def registered_source(self, base: LoadedModel) -> TripletSource:
        """The source ``config.data`` names among the installed worlds'; one that draws its
        pictures (``generated``) gets the loaded base model."""
        from retouch.train.data import registered_sources

        known = registered_sources()
        if self.config.data not in known:
            raise ValueError(f"unknown instruction data {self.config.data!r}; expected one of {sorted(known)}")
        factory = known[self.config.data]
        if "base" not in inspect.signature(factory).parameters:
            return factory()
        if base.pipe.unet.config.in_channels != LATENT_CHANNELS:
            raise ValueError(
                f"--data {self.config.data} draws its pictures with the base model, which must be a text-to-image "
                f"model; {self.config.base!r} is an instruct model. Draw with a text-to-image base, or train it "
                "further on rendered data (--data shapes64-instructions)"
            )
        return factory(base=base)

    def instruct_tokenizer(self, base: LoadedModel, source: TripletSource) -> CLIPTokenizer:
        folder = self.work / "tokenizer"
        if self.accelerator.is_main_process and not (folder / "tokenizer_config.json").exists():
            extend_tokenizer(base.pipe.tokenizer, source.vocabulary(), folder)
        self.accelerator.wait_for_everyone()
        return CLIPTokenizer.from_pretrained(folder)

    @torch.no_grad()
    def encode_triplets(
        self, source: TripletSource, vae: AutoencoderKL
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[str]]:
        """Input latents (unscaled, as the pipeline conditions on them), edited latents (scaled),
        the edit regions on the latent grid, and the instructions."""
        c, path = self.config, self.work / "triplets.safetensors"
        if self.accelerator.is_main_process and not path.exists():
            rng, chunks, texts = np.random.default_rng([c.seed, 7]), {"inputs": [], "targets": [], "regions": []}, []
            chunk = min(256, c.num_triplets)
            for _ in tqdm(range(0, c.num_triplets, chunk), desc="encode", disable=self.quiet):
                sources, instructions, edited, regions = source.sample_triplets(rng, chunk)
                chunks["inputs"].append(vae.encode(pixels_to_tensor(sources)).latent_dist.mode())
                chunks["targets"].append(vae.encode(pixels_to_tensor(edited)).latent_dist.mean)
                size = chunks["inputs"][-1].shape[-1]
                chunks["regions"].append(emphasis_mask(torch.from_numpy(regions), size, c.loss_emphasis))
                texts += instructions
            tensors = {k: torch.cat(v)[: c.num_triplets].half().contiguous() for k, v in chunks.items()}
            save_file(tensors, path.with_suffix(".tmp"))
            (self.work / "instructions.json").write_text(json.dumps(texts[: c.num_triplets]))
            if (stats := getattr(source, "stats", None)) is not None:  # a generating source's filter
                self.log(f"triplets drawn {stats.drawn}, kept {stats.kept} ({100 * stats.kept_share:.1f}%)")
            path.with_suffix(".tmp").rename(path)
            self.log(f"triplets: {tuple(tensors['inputs'].shape)} latents pre-encoded")
        self.accelerator.wait_for_everyone()
        stored = {k: v.float() for k, v in load_file(path).items()}
        instructions = json.loads((self.work / "instructions.json").read_text())
        targets = stored["targets"] * vae.config.scaling_factor
        return stored["inputs"], targets, stored["regions"], instructions

    def instruct_models(
        self, base: LoadedModel, tokenizer: CLIPTokenizer
    ) -> tuple[UNet2DConditionModel, CLIPTextModel]:
        """The base's UNet widened and its text encoder with the grown vocabulary (seeded). A base
        that is already an instruct model (8 input channels) is trained further as it is."""
        unet = base.pipe.unet
        if unet.config.in_channels == LATENT_CHANNELS:
            unet = widen_conv_in(unet)
        elif unet.config.in_channels != LATENT_CHANNELS + IMAGE_CHANNELS:
            raise ValueError(
                f"base {self.config.base!r}: its UNet takes {unet.config.in_channels} input channels; "
                f"expected {LATENT_CHANNELS} (a text-to-image model) or {LATENT_CHANNELS + IMAGE_CHANNELS} "
                "(an instruct model)"
            )
        text_encoder = resize_token_embeddings(
            base.pipe.text_encoder, base.pipe.tokenizer, tokenizer, self.config.seed, self.config.new_token_noise
        )
        return unet, text_encoder

    def train_instruct(
        self,
        base: LoadedModel,
        tokenizer: CLIPTokenizer,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        regions: torch.Tensor,
        instructions: list[str],
    ) -> tuple[UNet2DConditionModel, CLIPTextModel]:
        c, final = self.config, self.work / "instruct.safetensors"
        unet, text_encoder = self.instruct_models(base, tokenizer)
        if final.exists():
            load_pair(load_file(final), unet, text_encoder)
            return unet, text_encoder
        noise_scheduler = DDPMScheduler.from_config(base.pipe.scheduler.config)
        params = list(unet.parameters()) + list(text_encoder.parameters())
        ema = EMAModel(params, decay=c.ema_decay, use_ema_warmup=True, power=3 / 4)
        opt = torch.optim.AdamW(params, lr=c.lr, betas=(0.9, 0.99), weight_decay=0.01)
        sched = get_cosine_schedule_with_warmup(opt, c.warmup_steps, c.steps)
        start = self._resume("instruct", {"unet": unet, "text_encoder": text_encoder}, opt, sched, ema)
        length = tokenizer.model_max_length
        ids = tokenizer(instructions, padding="max_length", max_length=length, truncation=True,
                        return_tensors="pt").input_ids
        empty = tokenizer([""], padding="max_length", max_length=length, return_tensors="pt").input_ids
        unet, text_encoder, opt = self.accelerator.prepare(unet, text_encoder, opt)
        ema.to(self.accelerator.device)  # its shadow weights follow the models (a GPU, say)
        bar = self._progress(c.steps, start, "instruct")
        data = (inputs, targets, regions, ids, empty[0])
        for step in range(start, c.steps):
            loss = self.instruct_loss(step, unet, text_encoder, noise_scheduler, data)
            models = {"unet": unet, "text_encoder": text_encoder}
            self.update("instruct", step, c.steps, loss, params, (opt, sched, ema), models, bar)
        bar.close()
        unet, text_encoder = self.accelerator.unwrap_model(unet), self.accelerator.unwrap_model(text_encoder)
        ema.copy_to(params)
        if self.accelerator.is_main_process:
            save_file(pair_state(unet, text_encoder), final)
        self.accelerator.wait_for_everyone()
        return unet, text_encoder

    def instruct_loss(
        self,
        step: int,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        noise_scheduler: DDPMScheduler,
        data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    ) -> torch.Tensor:
        """One batch's loss; its draws are a pure function of (seed, step, process), so a resumed
        run sees the same batches."""
        c = self.config
        inputs, targets, regions, ids, empty = data
        n = c.batch_size // self.accelerator.num_processes
        g = torch.Generator().manual_seed(int(self._rng("instruct", step).integers(2**62)))
        idx = torch.randint(0, len(targets), (n,), generator=g)
        x0, image, tokens = targets[idx], inputs[idx].clone(), ids[idx].clone()
        drop_text, drop_image = conditioning_dropout(torch.rand(n, generator=g), c.conditioning_dropout)
        tokens[drop_text] = empty
        image[drop_image] = 0.0  # the pipeline's unconditional picture: zero latents
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (n,), generator=g)
        noisy = torch.cat([noise_scheduler.add_noise(x0, noise, t), image], dim=1)
        device = self.accelerator.device
        hidden = text_encoder(tokens.to(device))[0]
        pred = unet(noisy.to(device), t.to(device), hidden).sample
        velocity = noise_scheduler.config.prediction_type == "v_prediction"
        target = noise_scheduler.get_velocity(x0, noise, t) if velocity else noise
        per_cell = F.mse_loss(pred, target.to(device), reduction="none").mean(dim=1)  # (n, h, w)
        if c.edit_loss_share > 0:
            per_cell = per_cell * foreground_weights(regions[idx].to(device), c.edit_loss_share)
        return per_cell.mean()

    def export_instruct(
        self,
        base: LoadedModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        text_encoder: CLIPTextModel,
        output: Path | None = None,
    ) -> Path:
        """The diffusers folder, its recipe, recommended settings and training curves, in
        ``output`` (default: the run's folder)."""
        output = output or self.output_dir
        if self.accelerator.is_main_process:
            pipe = StableDiffusionInstructPix2PixPipeline(
                vae=base.pipe.vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                scheduler=base.pipe.scheduler, safety_checker=None, feature_extractor=None,
                requires_safety_checker=False,
            )
            pipe.save_pretrained(output, safe_serialization=True)
            (output / "recipe.json").write_text(self.config.to_json())
            c = self.config
            defaults = {"guidance_scale": c.guidance_scale, "image_guidance_scale": c.image_guidance_scale,
                        "steps": c.inference_steps}
            (output / "retouch.json").write_text(json.dumps(defaults, indent=2) + "\n")
            plot_curves(self.work, output / "training_curves.png")
        self.accelerator.wait_for_everyone()
        return output


def export_checkpoint(run: str | Path, output: str | Path, log: Log = print) -> Path:
    """A model from the newest checkpoint of the run in ``run`` (its EMA weights), written to
    ``output``: for a run stopped early, or one still training."""
    run = Path(run)
    trainer = InstructTrainer(InstructConfig.from_json(run / "work" / "recipe.json"), run, log=log, quiet=True)
    found = load_checkpoint(run / "work" / "checkpoints" / "instruct")
    if found is None:
        raise ValueError(f"{run} holds no instruct checkpoint yet")
    step, weights, state = found
    base = load_model(trainer.config.base, device="cpu")
    tokenizer = CLIPTokenizer.from_pretrained(run / "work" / "tokenizer")
    unet, text_encoder = trainer.instruct_models(base, tokenizer)
    load_pair(weights, unet, text_encoder)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = EMAModel(params, decay=trainer.config.ema_decay, use_ema_warmup=True, power=3 / 4)
    ema.load_state_dict(state["ema"])
    ema.copy_to(params)
    log(f"exporting step {step} of {trainer.config.steps} (EMA weights) to {output}")
    return trainer.export_instruct(base, tokenizer, unet, text_encoder, Path(output))


def train_instruct_model(
    config: InstructConfig,
    output_dir: str | Path,
    source: TripletSource | None = None,
    quiet: bool = False,
    log: Log = print,
) -> Path:
    """Python API: fine-tune (or resume) an instruct model and write a diffusers folder."""
    start = time.time()
    out = InstructTrainer(config, Path(output_dir), log=log, quiet=quiet).run(source)  # type: ignore[arg-type]
    log(f"trained in {(time.time() - start) / 60:.1f} min: {out}")
    return out


__all__ = [
    "InstructConfig", "InstructTrainer", "conditioning_dropout", "export_checkpoint", "extend_tokenizer",
    "resize_token_embeddings", "train_instruct_model", "widen_conv_in",
]
