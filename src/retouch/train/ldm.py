"""Train a small latent diffusion model from scratch: tokenizer, VAE, text encoder and UNet.

Stages run in order and each is skipped once its output exists, so a re-run resumes where a run
stopped (within a stage, from its last checkpoint):

1. tokenizer: a word-level CLIP tokenizer over the data's vocabulary;
2. vae: an ``AutoencoderKL`` with f=4, trained on random crops (convolutions do not care);
3. latents: the data pre-encoded once (posterior means), and the latent scaling factor;
4. ldm: ``CLIPTextModel`` and ``UNet2DConditionModel`` trained jointly on epsilon prediction with
   Min-SNR-gamma loss weighting (Hang et al., 2023), caption dropout for classifier-free guidance
   and EMA weights;
5. export: a diffusers folder that ``StableDiffusionPipeline.from_pretrained`` loads.

With ``base`` (a trained model's folder) a run starts from that model instead: its tokenizer, VAE,
text encoder and UNet are taken as they are and only the decoder stage runs, so a trained model's
decoder can be sharpened later without touching its latent space.

Works on one process or many under ``accelerate launch``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.optimization import get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel, compute_snr
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from retouch.core.limits import MAX_SEED, Limit
from retouch.errors import RetouchError
from retouch.io.locks import lock_folder
from retouch.models.loading import load_model
from retouch.train.checkpoint import TRAIN_LOCK, load_checkpoint, save_checkpoint
from retouch.train.data import Source, make_source
from retouch.train.recipe_check import check_recipe, recipe_from_json
from retouch.train.tokenizer import build_clip_tokenizer

Log = Callable[[str], None]


_COUNT, _STEPS = Limit(1, 4096, integer=True), Limit(0, 10**7, integer=True)
_LR, _SHARE = Limit(0, 1, low_open=True), Limit(0, 1)
RECIPE_LIMITS = {
    "resolution": Limit(8, 2048, integer=True),
    "seed": Limit(0, MAX_SEED, integer=True),
    "max_length": Limit(3, 77, integer=True),
    "vae_channels": _COUNT,
    "vae_steps": _STEPS,
    "vae_batch_size": _COUNT,
    "vae_crop": Limit(8, 2048, integer=True),
    "vae_lr": _LR,
    "vae_kl_weight": _SHARE,
    "decoder_steps": _STEPS,
    "decoder_batch_size": _COUNT,
    "decoder_lr": _LR,
    "decoder_edge_weight": Limit(0, 1000),
    "num_latents": Limit(1, 10**7, integer=True),
    "text_hidden": _COUNT,
    "text_layers": Limit(1, 64, integer=True),
    "text_heads": Limit(1, 64, integer=True),
    "unet_channels": _COUNT,
    "unet_heads": Limit(1, 64, integer=True),
    "layers_per_block": Limit(1, 16, integer=True),
    "unet_steps": _STEPS,
    "unet_batch_size": _COUNT,
    "unet_lr": _LR,
    "warmup_steps": _STEPS,
    "min_snr_gamma": Limit(0, 100),
    "foreground_loss_share": _SHARE,
    "caption_dropout": _SHARE,
    "ema_decay": _SHARE,
    "checkpoint_every": Limit(1, 10**7, integer=True),
    "guidance_scale": Limit(0, 50),
}


@dataclass
class LDMConfig:
    """Everything a training run needs; saved as recipe.json beside the model."""

    data: str = "shapes64"  # shapes64 | imagefolder | fashion-mnist
    # a trained model (bundled name or diffusers folder) whose decoder alone this run fine-tunes;
    # every other stage is then skipped (vae_steps and unet_steps must be 0)
    base: str | None = None
    data_dir: str | None = None  # folder for imagefolder / fashion-mnist
    resolution: int = 64  # picture side in pixels (shapes64 is always 64)
    seed: int = 0
    max_length: int = 20  # tokenizer length incl. start and end tokens
    # VAE: f = 2 ** (len(vae_channels) - 1)
    vae_channels: tuple[int, ...] = (32, 64, 64)
    vae_steps: int = 1000
    vae_batch_size: int = 64
    vae_crop: int = 32  # train on random crops of this side
    vae_lr: float = 1.5e-3
    vae_kl_weight: float = 1e-6
    # then the decoder alone on whole pictures (the latents, and so the UNet, are unchanged)
    decoder_steps: int = 0
    decoder_batch_size: int = 32
    decoder_lr: float = 5e-4
    # Extra loss weight of the pixels within one pixel of a colour edge of the input (the rest weigh 1).
    # A plain mean is won by flat areas, and the decoder rounds thin points and corners off: the
    # bundled VAE passed 73% of stars (a shape it never saw); weighing edges 1 + 10 made it 88%
    decoder_edge_weight: float = 0.0
    # pre-encoded latents
    num_latents: int = 40000
    # text encoder
    text_hidden: int = 128
    text_layers: int = 3
    text_heads: int = 4
    # UNet: cross-attention only at the lower resolutions keeps the 16x16 level cheap
    unet_channels: tuple[int, ...] = (32, 64, 128)
    unet_attention: tuple[bool, ...] = (False, True, True)
    unet_heads: int = 8
    layers_per_block: int = 1
    # Pool the caption into the timestep embedding too (diffusers' addition_embed_type="text"), so that
    # every ResNet block, the full-resolution ones without cross-attention included, sees what to draw
    unet_text_time_embedding: bool = False
    unet_steps: int = 3500
    unet_batch_size: int = 64
    unet_lr: float = 1e-3
    warmup_steps: int = 200
    # Zero terminal SNR with v-prediction (Lin et al., 2024): with SD's schedule the last noisy latent
    # still leaks the picture's mean colour, so a model learns colour from the leak instead of the text
    prediction_type: str = "v_prediction"  # or "epsilon"
    zero_terminal_snr: bool = True
    min_snr_gamma: float = 0.0  # Min-SNR-gamma loss weighting (Hang et al., 2023); 0 = off
    # Share of each sample's loss given to the latent cells around its object (0 = plain mean over
    # cells). A 20 px object covers 10% of a shapes-64 picture, so a plain mean learns the background
    # first and small shapes last; 0.5 weighs object and background halves equally. Needs a source
    # that knows its objects (shapes64).
    foreground_loss_share: float = 0.0
    caption_dropout: float = 0.1
    ema_decay: float = 0.999
    checkpoint_every: int = 200
    guidance_scale: float = 4.0  # recommended at inference, written into the model card

    @classmethod
    def from_json(cls, path: str | Path) -> LDMConfig:
        return recipe_from_json(cls, path)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def check(self) -> None:
        """Refuse a recipe with a wrong type, a non-finite number or a value out of range."""
        check_recipe(self, RECIPE_LIMITS, {"prediction_type": ("epsilon", "v_prediction")})
        if self.base is not None and (self.vae_steps or self.unet_steps or not self.decoder_steps):
            raise RetouchError(
                f"a recipe with base {self.base!r} fine-tunes that model's decoder alone: set vae_steps and "
                f"unet_steps to 0 and decoder_steps above 0 (got {self.vae_steps}, {self.unet_steps}, "
                f"{self.decoder_steps}), or drop base to train a model from scratch"
            )
        if len(self.unet_attention) != len(self.unet_channels):
            raise RetouchError(
                f"unet_attention has {len(self.unet_attention)} entries but unet_channels has "
                f"{len(self.unet_channels)}; give one true/false per UNet level"
            )


# Under ``accelerate launch`` the main process alone renders, draws or encodes the data while the
# others wait at a barrier: drawn instruction triplets take hours on a CPU, beyond torch's
# 30-minute default for a collective.
DATA_BARRIER_TIMEOUT = timedelta(hours=24)


def make_accelerator() -> Accelerator:
    return Accelerator(kwargs_handlers=[InitProcessGroupKwargs(timeout=DATA_BARRIER_TIMEOUT)])


@dataclass
class Trainer:
    config: LDMConfig
    output_dir: Path
    log: Log = print
    accelerator: Accelerator = field(default_factory=make_accelerator)
    quiet: bool = False

    # ---- helpers ---------------------------------------------------------------------------
    @property
    def work(self) -> Path:
        return self.output_dir / "work"

    def _rng(self, stage: str, step: int) -> np.random.Generator:
        """Data for (stage, step, process) is a pure function of the seed: resuming replays it."""
        tag = sum(map(ord, stage))
        return np.random.default_rng([self.config.seed, tag, step, self.accelerator.process_index])

    def _progress(self, total: int, start: int, desc: str) -> tqdm:
        return tqdm(total=total, initial=start, desc=desc, disable=self.quiet or not self.accelerator.is_main_process)

    def _record(self, stage: str, row: dict) -> None:
        if self.accelerator.is_main_process:
            with open(self.work / f"{stage}_log.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")

    # ---- stages ----------------------------------------------------------------------------
    def run(self, source: Source | None = None) -> Path:
        """Every stage, under the output folder's lock: a second trainer on it is refused."""
        lock = lock_folder(self.output_dir, TRAIN_LOCK, "retouch train") if self.accelerator.is_main_process else None
        try:
            self.work.mkdir(parents=True, exist_ok=True)
            recipe = self.work / "recipe.json"
            if recipe.exists() and json.loads(recipe.read_text()) != json.loads(self.config.to_json()):
                raise ValueError(f"{self.output_dir} holds a run with another recipe; use a new --output")
            if self.accelerator.is_main_process:
                recipe.write_text(self.config.to_json())
            return self.stages(source)
        finally:
            if lock is not None:
                lock.release(remove=True)

    def stages(self, source: Source | None) -> Path:
        """The run itself, once ``run`` holds the lock and has checked the recipe."""
        source = source or make_source(self.config.data, self.config.data_dir, self.config.resolution)
        if self.config.base is not None:
            base = load_model(self.config.base, device="cpu")
            pipe = base.pipe
            vae = self.finetune_decoder(source, pipe.vae)
            return self.export(vae, pipe.text_encoder, pipe.tokenizer, pipe.unet, pipe.scheduler, base.defaults)
        tokenizer = self.tokenizer(source)
        vae = self.train_vae(source)
        latents, captions, foreground = self.encode_latents(source, vae)
        vae = self.finetune_decoder(source, vae)
        unet, text_encoder = self.train_ldm(latents, captions, tokenizer, foreground)
        return self.export(vae, text_encoder, tokenizer, unet)

    def tokenizer(self, source: Source) -> CLIPTokenizer:
        folder = self.work / "tokenizer"
        if self.accelerator.is_main_process and not (folder / "tokenizer_config.json").exists():
            build_clip_tokenizer(source.vocabulary(), folder, self.config.max_length)
        self.accelerator.wait_for_everyone()
        return CLIPTokenizer.from_pretrained(folder)

    def new_vae(self) -> AutoencoderKL:
        n = len(self.config.vae_channels)
        return AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * n,
            up_block_types=("UpDecoderBlock2D",) * n,
            block_out_channels=self.config.vae_channels,
            latent_channels=4,
            layers_per_block=1,
            norm_num_groups=math.gcd(16, *self.config.vae_channels),
            sample_size=self.config.resolution,
            mid_block_add_attention=False,
        )

    def train_vae(self, source: Source) -> AutoencoderKL:
        c, final = self.config, self.work / "vae"
        if (final / "config.json").exists():
            return AutoencoderKL.from_pretrained(final)
        torch.manual_seed(c.seed)
        vae = self.new_vae()
        opt = torch.optim.AdamW(vae.parameters(), lr=c.vae_lr, weight_decay=0.0)
        sched = get_cosine_schedule_with_warmup(opt, 100, c.vae_steps)
        start = self._resume("vae", {"vae": vae}, opt, sched)
        vae, opt = self.accelerator.prepare(_ReconstructKL(vae), opt)
        bar = self._progress(c.vae_steps, start, "vae")
        crop = min(c.vae_crop, source.resolution)
        for step in range(start, c.vae_steps):
            rng = self._rng("vae", step)
            images, _ = source.sample(rng, c.vae_batch_size // self.accelerator.num_processes)
            x0, y0 = rng.integers(0, source.resolution - crop + 1, 2)
            x = pixels_to_tensor(images[:, y0 : y0 + crop, x0 : x0 + crop])
            recon, kl = vae(x)
            loss = reconstruction_loss(recon, x) + c.vae_kl_weight * kl
            self.accelerator.backward(loss)
            self.accelerator.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            self._record("vae", {"step": step + 1, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
            if (step + 1) % c.checkpoint_every == 0 or step + 1 == c.vae_steps:
                self._checkpoint("vae", step + 1, {"vae": self.accelerator.unwrap_model(vae).vae}, opt, sched)
        bar.close()
        vae = self.accelerator.unwrap_model(vae).vae
        if self.accelerator.is_main_process:
            vae.save_pretrained(final)
            self.log(f"vae: PSNR {vae_psnr(vae, source, n=256):.2f} dB on 256 fresh pictures")
        self.accelerator.wait_for_everyone()
        return AutoencoderKL.from_pretrained(final)

    @torch.no_grad()
    def encode_latents(self, source: Source, vae: AutoencoderKL) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        """Latents (scaled), captions and, with foreground_loss_share, each object's latent-cell mask."""
        c, path = self.config, self.work / "latents.safetensors"
        with_foreground = c.foreground_loss_share > 0
        if with_foreground and not hasattr(source, "sample_with_foreground"):
            raise ValueError(
                f"foreground_loss_share needs a data source that knows its objects (shapes64), "
                f"not {c.data!r}; set it to 0 in the recipe"
            )
        if self.accelerator.is_main_process and not path.exists():
            rng, chunks, masks, captions = np.random.default_rng([c.seed, 7]), [], [], []
            for _ in tqdm(range(0, c.num_latents, 256), desc="encode", disable=self.quiet):
                if with_foreground:
                    images, texts, coverage = source.sample_with_foreground(rng, 256)
                else:
                    images, texts = source.sample(rng, 256)
                chunks.append(vae.encode(pixels_to_tensor(images)).latent_dist.mean)
                if with_foreground:
                    masks.append(latent_mask(torch.from_numpy(coverage), chunks[-1].shape[-1]))
                captions += texts
            latents = torch.cat(chunks)[: c.num_latents]
            scaling = 1.0 / latents.std().item()
            tensors = {"latents": latents.half().contiguous()}
            if with_foreground:
                tensors["foreground"] = torch.cat(masks)[: c.num_latents].half().contiguous()
            save_file(tensors, path.with_suffix(".tmp"))
            (self.work / "captions.json").write_text(json.dumps(captions[: c.num_latents]))
            path.with_suffix(".tmp").rename(path)
            vae.register_to_config(scaling_factor=scaling)
            vae.save_pretrained(self.work / "vae")
            self.log(f"latents: {tuple(latents.shape)}, scaling factor {scaling:.4f}")
        self.accelerator.wait_for_everyone()
        vae.register_to_config(scaling_factor=AutoencoderKL.load_config(self.work / "vae")["scaling_factor"])
        captions = json.loads((self.work / "captions.json").read_text())
        stored = load_file(path)
        if with_foreground and "foreground" not in stored:
            raise ValueError(f"{path} was encoded without object masks; delete it to encode again")
        foreground = stored["foreground"].float() if with_foreground else None
        return stored["latents"].float() * vae.config.scaling_factor, captions, foreground

    def finetune_decoder(self, source: Source, vae: AutoencoderKL) -> AutoencoderKL:
        """Sharpen the decoder on whole pictures with the encoder frozen (as SD's ft-MSE VAE did)."""
        c, final = self.config, self.work / "vae-decoder"
        if c.decoder_steps == 0:
            return vae
        if (final / "config.json").exists():
            return AutoencoderKL.from_pretrained(final)
        vae.requires_grad_(False)
        decoder = torch.nn.ModuleList([vae.post_quant_conv, vae.decoder])
        decoder.requires_grad_(True)
        opt = torch.optim.AdamW(decoder.parameters(), lr=c.decoder_lr, weight_decay=0.0)
        sched = get_cosine_schedule_with_warmup(opt, 50, c.decoder_steps)
        start = self._resume("decoder", {"vae": vae}, opt, sched)
        wrapped, opt = self.accelerator.prepare(_Decode(vae), opt)
        bar = self._progress(c.decoder_steps, start, "decoder")
        for step in range(start, c.decoder_steps):
            per_process = c.decoder_batch_size // self.accelerator.num_processes
            images, _ = source.sample(self._rng("decoder", step), per_process)
            x = pixels_to_tensor(images)
            recon = wrapped(x)
            loss = reconstruction_loss(recon, x, c.decoder_edge_weight)
            self.accelerator.backward(loss)
            self.accelerator.clip_grad_norm_(decoder.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            self._record("decoder", {"step": step + 1, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
            if (step + 1) % c.checkpoint_every == 0 or step + 1 == c.decoder_steps:
                self._checkpoint("decoder", step + 1, {"vae": vae}, opt, sched)
        bar.close()
        if self.accelerator.is_main_process:
            vae.save_pretrained(final)
            self.log(f"vae decoder: PSNR {vae_psnr(vae, source, n=256):.2f} dB on 256 fresh pictures")
        self.accelerator.wait_for_everyone()
        return AutoencoderKL.from_pretrained(final)

    def new_text_encoder(self, tokenizer: CLIPTokenizer) -> CLIPTextModel:
        c = self.config
        return CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=c.text_hidden,
                intermediate_size=4 * c.text_hidden,
                num_hidden_layers=c.text_layers,
                num_attention_heads=c.text_heads,
                max_position_embeddings=c.max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )

    def new_unet(self, latent_size: int) -> UNet2DConditionModel:
        c = self.config
        down = tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in c.unet_attention)
        up = tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(c.unet_attention))
        return UNet2DConditionModel(
            sample_size=latent_size,
            in_channels=4,
            out_channels=4,
            down_block_types=down,
            up_block_types=up,
            block_out_channels=c.unet_channels,
            layers_per_block=c.layers_per_block,
            cross_attention_dim=c.text_hidden,
            attention_head_dim=c.unet_heads,
            norm_num_groups=math.gcd(32, *c.unet_channels),
            addition_embed_type="text" if c.unet_text_time_embedding else None,
            addition_embed_type_num_heads=c.text_heads,
        )

    def train_ldm(
        self,
        latents: torch.Tensor,
        captions: list[str],
        tokenizer: CLIPTokenizer,
        foreground: torch.Tensor | None = None,
    ) -> tuple[UNet2DConditionModel, CLIPTextModel]:
        c = self.config
        torch.manual_seed(c.seed + 1)
        unet, text_encoder = self.new_unet(latents.shape[-1]), self.new_text_encoder(tokenizer)
        final = self.work / "ldm.safetensors"
        if final.exists():
            load_pair(load_file(final), unet, text_encoder)
            return unet, text_encoder
        noise_scheduler = self.noise_scheduler()
        params = list(unet.parameters()) + list(text_encoder.parameters())
        ema = EMAModel(params, decay=c.ema_decay, use_ema_warmup=True, power=3 / 4)
        opt = torch.optim.AdamW(params, lr=c.unet_lr, betas=(0.9, 0.99), weight_decay=0.01)
        sched = get_cosine_schedule_with_warmup(opt, c.warmup_steps, c.unet_steps)
        start = self._resume("ldm", {"unet": unet, "text_encoder": text_encoder}, opt, sched, ema)
        ids = tokenizer(
            captions, padding="max_length", max_length=c.max_length, truncation=True, return_tensors="pt"
        ).input_ids
        empty = tokenizer([""], padding="max_length", max_length=c.max_length, return_tensors="pt").input_ids
        unet, text_encoder, opt = self.accelerator.prepare(unet, text_encoder, opt)
        ema.to(self.accelerator.device)  # its shadow weights follow the models (a GPU, say)
        bar = self._progress(c.unet_steps, start, "ldm")
        per_process = c.unet_batch_size // self.accelerator.num_processes
        for step in range(start, c.unet_steps):
            g = torch.Generator().manual_seed(int(self._rng("ldm", step).integers(2**62)))
            idx = torch.randint(0, len(latents), (per_process,), generator=g)
            x0, tokens = latents[idx], ids[idx].clone()
            tokens[torch.rand(per_process, generator=g) < c.caption_dropout] = empty[0]
            noise = torch.randn(x0.shape, generator=g)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (per_process,), generator=g)
            noisy = noise_scheduler.add_noise(x0, noise, t)
            hidden = text_encoder(tokens)[0]  # (batch, tokens, text_hidden)
            pred = unet(noisy, t, hidden).sample
            target = noise if c.prediction_type == "epsilon" else noise_scheduler.get_velocity(x0, noise, t)
            per_cell = F.mse_loss(pred, target, reduction="none").mean(dim=1)  # (batch, h, w)
            if foreground is not None:
                per_cell = per_cell * foreground_weights(foreground[idx], c.foreground_loss_share)
            per_sample = per_cell.mean(dim=(1, 2))
            if c.min_snr_gamma > 0:
                snr = compute_snr(noise_scheduler, t)
                per_sample = per_sample * min_snr_weights(snr, c.min_snr_gamma, c.prediction_type)
            loss = per_sample.mean()
            models = {"unet": unet, "text_encoder": text_encoder}
            self.update("ldm", step, c.unet_steps, loss, params, (opt, sched, ema), models, bar)
        bar.close()
        unet, text_encoder = self.accelerator.unwrap_model(unet), self.accelerator.unwrap_model(text_encoder)
        ema.copy_to(params)
        if self.accelerator.is_main_process:
            save_file(pair_state(unet, text_encoder), final)
        self.accelerator.wait_for_everyone()
        return unet, text_encoder

    def noise_scheduler(self) -> DDPMScheduler:
        # Stable Diffusion's betas; with zero_terminal_snr rescaled as in SD 2.x-style fixes, sampled
        # with "trailing" timesteps so that inference starts from the pure-noise step
        c = self.config
        return DDPMScheduler(
            num_train_timesteps=1000,
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            prediction_type=c.prediction_type,
            clip_sample=False,
            steps_offset=1,
            rescale_betas_zero_snr=c.zero_terminal_snr,
            timestep_spacing="trailing" if c.zero_terminal_snr else "leading",
        )

    def export(
        self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, unet: UNet2DConditionModel,
        scheduler: object | None = None, defaults: dict | None = None,
    ) -> Path:
        """The pipeline folder; a base model's ``scheduler`` and ``defaults`` (its retouch.json), or
        ones built from the recipe."""
        if self.accelerator.is_main_process:
            scheduler = scheduler or EulerDiscreteScheduler.from_config(self.noise_scheduler().config)
            pipe = StableDiffusionPipeline(
                vae=vae,
                text_encoder=text_encoder,
                tokenizer=tokenizer,
                unet=unet,
                scheduler=scheduler,
                safety_checker=None,
                feature_extractor=None,
                requires_safety_checker=False,
            )
            pipe.save_pretrained(self.output_dir, safe_serialization=True)
            (self.output_dir / "recipe.json").write_text(self.config.to_json())
            defaults = defaults or {"guidance_scale": self.config.guidance_scale, "steps": 25}
            (self.output_dir / "retouch.json").write_text(json.dumps(defaults, indent=2) + "\n")
            plot_curves(self.work, self.output_dir / "training_curves.png")
        self.accelerator.wait_for_everyone()
        return self.output_dir

    def update(
        self, stage: str, step: int, total: int, loss: torch.Tensor, params: list, optimizers: tuple,
        models: dict, bar: tqdm,
    ) -> None:
        """After a step's forward pass: backward, clip, the (optimizer, LR schedule, EMA) steps,
        the progress bar and log, and a checkpoint every ``checkpoint_every`` steps and at the end."""
        opt, sched, ema = optimizers
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        ema.step(params)
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        row = {"step": step + 1, "loss": loss.item(), "lr": sched.get_last_lr()[0]}
        self._record(stage, row | {"processes": self.accelerator.num_processes})
        if (step + 1) % self.config.checkpoint_every == 0 or step + 1 == total:
            self._checkpoint(stage, step + 1, models, opt, sched, ema)

    # ---- checkpoints -----------------------------------------------------------------------
    def _checkpoint(self, stage: str, step: int, models: dict, opt, sched, ema: EMAModel | None = None) -> None:
        if not self.accelerator.is_main_process:
            return
        weights = {}
        for name, model in models.items():
            for k, v in self.accelerator.unwrap_model(model).state_dict().items():
                weights[f"{name}.{k}"] = v
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}
        if ema is not None:
            state["ema"] = ema.state_dict()
        save_checkpoint(self.work / "checkpoints" / stage, step, weights, state)

    def _resume(self, stage: str, models: dict, opt, sched, ema: EMAModel | None = None) -> int:
        found = load_checkpoint(self.work / "checkpoints" / stage)
        if found is None:
            return 0
        step, weights, state = found
        for name, model in models.items():
            prefix = name + "."
            model.load_state_dict({k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)})
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        self.log(f"{stage}: resumed at step {step}")
        return step


def foreground_weights(mask: torch.Tensor, share: float) -> torch.Tensor:
    """Per-cell loss weights (batch, h, w) with mean 1 per sample that give the cells inside ``mask``
    (values in [0, 1]) the fraction ``share`` of the sample's loss; a sample whose mask is empty or
    full keeps uniform weights."""
    area = mask.mean(dim=(1, 2), keepdim=True)
    inside = share / area.clamp(min=1e-6)
    outside = (1 - share) / (1 - area).clamp(min=1e-6)
    weights = mask * inside + (1 - mask) * outside
    degenerate = (area <= 1e-6) | (area >= 1 - 1e-6)
    return torch.where(degenerate, torch.ones_like(weights), weights)


def latent_mask(coverage: torch.Tensor, latent_size: int) -> torch.Tensor:
    """Object coverage (n, H, W) -> (n, latent_size, latent_size): each cell's covered fraction,
    grown by one cell (the VAE spreads an edge into its neighbours)."""
    cells = F.adaptive_avg_pool2d(coverage[:, None], latent_size)
    return F.max_pool2d(cells, 3, stride=1, padding=1)[:, 0]


_latent_mask = latent_mask  # the old name


def min_snr_weights(snr: torch.Tensor, gamma: float, prediction_type: str) -> torch.Tensor:
    """Min-SNR-gamma loss weights per sample, as diffusers' train_text_to_image.py computes them:
    ``min(snr, gamma) / snr`` for epsilon, ``/ (snr + 1)`` for v-prediction; 1 where snr is 0
    (the pure-noise step of a zero-terminal-SNR schedule)."""
    clipped = torch.clamp(snr, max=gamma)
    weight = clipped / (snr + 1) if prediction_type == "v_prediction" else clipped / snr
    return torch.where(snr == 0, torch.ones_like(weight), weight)


class _ReconstructKL(torch.nn.Module):
    """One forward for the VAE's training step, so DDP sees (and synchronises) the whole graph."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.vae.encode(x).latent_dist
        return self.vae.decode(posterior.sample()).sample, posterior.kl().mean()


class _Decode(torch.nn.Module):
    """decode(encode(x)) with the encoder frozen: posterior means, as inference uses them."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            z = self.vae.encode(x).latent_dist.mean
        return self.vae.decode(z).sample


def reconstruction_loss(recon: torch.Tensor, x: torch.Tensor, edge_weight: float = 0.0) -> torch.Tensor:
    """L1 + MSE, each pixel within one pixel of a colour edge of ``x`` weighing 1 + ``edge_weight``.

    An edge pixel is one whose 3x3 neighbourhood spans more than 0.02 in some channel of ``x`` (in
    [-1, 1]: about 2.5 levels of 255), whatever the edge's contrast: close colours weigh as much as far ones.
    """
    if edge_weight == 0:
        return F.l1_loss(recon, x) + F.mse_loss(recon, x)
    spread = (F.max_pool2d(x, 3, 1, 1) + F.max_pool2d(-x, 3, 1, 1)).amax(1, keepdim=True)
    weights = 1 + edge_weight * (spread > 0.02).float()
    return (weights * ((recon - x).abs() + (recon - x) ** 2)).mean() / weights.mean()


def pixels_to_tensor(images: np.ndarray) -> torch.Tensor:
    """(batch, h, w, 3) uint8 -> (batch, 3, h, w) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def pair_state(unet: torch.nn.Module, text_encoder: torch.nn.Module) -> dict[str, torch.Tensor]:
    state = {f"unet.{k}": v.contiguous() for k, v in unet.state_dict().items()}
    state.update({f"text_encoder.{k}": v.contiguous() for k, v in text_encoder.state_dict().items()})
    return state


def load_pair(state: dict[str, torch.Tensor], unet: torch.nn.Module, text_encoder: torch.nn.Module) -> None:
    unet.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("unet.")})
    text_encoder.load_state_dict({k[13:]: v for k, v in state.items() if k.startswith("text_encoder.")})


@torch.no_grad()
def vae_psnr(vae: AutoencoderKL, source: Source, n: int = 1000, seed: int = 12345) -> float:
    """Mean PSNR (dB) of decode(encode(x)) over ``n`` fresh pictures, in 8-bit pixels."""
    rng, total = np.random.default_rng(seed), []
    for start in range(0, n, 100):
        images, _ = source.sample(rng, min(100, n - start))
        recon = vae.decode(vae.encode(pixels_to_tensor(images)).latent_dist.mean).sample
        pixels = ((recon.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy()
        mse = ((pixels - images.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
        total += list(10 * np.log10(255.0**2 / np.maximum(mse, 1e-10)))
    return float(np.mean(total))


def plot_curves(work: Path, out: Path) -> None:
    """Training loss curves of every stage, smoothed, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = sorted(work.glob("*_log.jsonl"))
    fig, axes = plt.subplots(1, max(len(logs), 1), figsize=(5 * max(len(logs), 1), 3.5), squeeze=False)
    for ax, path in zip(axes[0], logs, strict=False):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        steps = np.array([r["step"] for r in rows])
        loss = np.array([r["loss"] for r in rows])
        k = max(1, len(loss) // 50)
        smooth = np.convolve(loss, np.ones(k) / k, mode="valid")
        ax.plot(steps, loss, alpha=0.25)
        ax.plot(steps[k - 1 :], smooth)
        ax.set_yscale("log")
        ax.set_title(path.stem.replace("_log", ""))
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def train_ldm_model(config: LDMConfig, output_dir: str | Path, quiet: bool = False, log: Log = print) -> Path:
    """Python API: train (or resume) a latent diffusion model and write a diffusers folder."""
    config.check()
    start = time.time()
    out = Trainer(config, Path(output_dir), log=log, quiet=quiet).run()
    log(f"trained in {(time.time() - start) / 60:.1f} min: {out}")
    return out


__all__ = ["LDMConfig", "Trainer", "train_ldm_model", "vae_psnr", "plot_curves"]
