"""Instruction triplets the InstructPix2Pix paper's way (Brooks et al. 2022, section 3.1): caption
pairs written from a grammar, picture pairs drawn by the base text-to-image model with
prompt-to-prompt, and only the pairs that CLIP says show the edit kept.

1. captions: a grammar (``CaptionGrammar``: a world's, e.g. shapes-64's instructions) gives
   (input caption, instruction, edited caption), where the paper had GPT-3 write them;
2. pictures: both captions are sampled in one batch from the same initial latents, the edited
   caption taking the input caption's cross-attention maps for the first fraction ``p`` of the
   steps (``steer.share``, the paper's "word swap"), ``p`` drawn uniformly from ``share_range``
   for each batch (the paper drew it per sample from U(0.1, 0.9));
3. filter: kept when CLIP's directional similarity (the change of the image embedding against
   the change of the caption embedding) and the image similarity of the two pictures both reach
   their thresholds (the paper: 0.2 and 0.75 with its CLIP; for a world's own CLIP, choose them
   on a sample and document them).

The edit region handed to the trainer is where the two pictures differ (grown 2 px): nothing
the world's renderer knows enters the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from scipy.ndimage import binary_dilation

from retouch.core.generate import default_size
from retouch.core.weighting import encode_weighted_prompt
from retouch.errors import RetouchError
from retouch.metrics.clip_score import ClipScorer
from retouch.models.loading import LoadedModel, load_model
from retouch.steer.share import SharedClock, shared_cross_attention


class CaptionGrammar(Protocol):
    """Where the caption triplets come from."""

    resolution: int

    def sample_captions(self, rng: np.random.Generator) -> tuple[str, str, str]:
        """(input caption, instruction, edited caption)."""
        ...

    def vocabulary(self) -> list[str]: ...


@dataclass(frozen=True)
class GeneratedSettings:
    """How the picture pairs are drawn and filtered."""

    steps: int = 20  # sampling steps per picture pair
    guidance_scale: float | None = None  # None: the model's recommended scale
    share_range: tuple[float, float] = (0.1, 0.9)  # prompt-to-prompt's fraction of shared steps
    min_directional: float = 0.3  # CLIP directional similarity of the pair to the caption change
    min_image_similarity: float = 0.5  # CLIP image similarity of the two pictures
    batch: int = 32  # caption pairs sampled in one pipeline call
    change_threshold: int = 24  # a pixel changed when a channel moved more than this (0-255)
    grow: int = 2  # the changed region grown by this many pixels


@dataclass
class GenerationStats:
    """How many pairs were drawn and how many the filter kept."""

    drawn: int = 0
    kept: int = 0
    directional: list[float] = field(default_factory=list)  # every drawn pair's
    image_similarity: list[float] = field(default_factory=list)

    @property
    def kept_share(self) -> float:
        return self.kept / max(self.drawn, 1)


@torch.no_grad()
def draw_pairs(
    model: LoadedModel,
    sources: list[str],
    targets: list[str],
    seeds: list[int],
    share: float,
    settings: GeneratedSettings = GeneratedSettings(),
) -> tuple[np.ndarray, np.ndarray]:
    """Pictures of ``sources`` and of ``targets`` (uint8, (n, H, W, 3) each), pair i from seed i,
    the target taking its source's cross-attention maps for the first ``share`` of the steps."""
    pipe = model.pipe
    width, height = default_size(pipe)
    texts = [text for pair in zip(sources, targets, strict=True) for text in pair]  # [A1, B1, A2, B2, ...]
    embeds = torch.cat([encode_weighted_prompt(pipe, text) for text in texts])
    negative = encode_weighted_prompt(pipe, "").expand(len(embeds), -1, -1)
    shape = (pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    noise = [torch.randn(shape, generator=torch.Generator().manual_seed(s), dtype=embeds.dtype) for s in seeds]
    latents = torch.stack([z for z in noise for _ in range(2)])  # [A1, B1, A2, B2, ...]
    clock = SharedClock(until=round(share * settings.steps))
    pipe.set_progress_bar_config(disable=True)  # the trainer's own bar counts the triplets
    with shared_cross_attention(pipe.unet, clock):
        images = pipe(
            prompt_embeds=embeds,
            negative_prompt_embeds=negative,
            latents=latents,
            num_inference_steps=settings.steps,
            guidance_scale=model.guidance_scale(settings.guidance_scale),
            generator=torch.Generator().manual_seed(seeds[0]),
            callback_on_step_end=clock.callback(),
            output_type="np",
        ).images
    pixels = (np.clip(images, 0, 1) * 255).round().astype(np.uint8)
    return pixels[0::2], pixels[1::2]


def clip_filter_scores(
    clip: ClipScorer, before: np.ndarray, after: np.ndarray, sources: list[str], targets: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: CLIP directional similarity and image similarity (``clip_directions``' formulas)."""
    image_a, image_b = clip.image_features(list(before)), clip.image_features(list(after))
    text_a, text_b = clip.text_features(sources), clip.text_features(targets)
    change, wanted = image_b - image_a, text_b - text_a
    directional = (change * wanted).sum(-1) / (change.norm(dim=-1) * wanted.norm(dim=-1)).clamp(min=1e-8)
    similarity = (image_a * image_b).sum(-1)
    return directional.cpu().numpy(), similarity.cpu().numpy()


def changed_region(before: np.ndarray, after: np.ndarray, threshold: int, grow: int) -> np.ndarray:
    """(n, H, W) float: 1 where the pictures differ by more than ``threshold``, grown ``grow`` px."""
    changed = np.abs(before.astype(np.int16) - after.astype(np.int16)).max(-1) > threshold
    if grow:
        structure = np.ones((1, 2 * grow + 1, 2 * grow + 1), dtype=bool)
        changed = binary_dilation(changed, structure=structure)
    return changed.astype(np.float32)


class GeneratedTriplets:
    """A ``TripletSource`` for ``retouch train instruct --data generated``: the paper's pipeline on
    ``grammar``'s captions, the ``base`` model's pictures and the ``clip`` filter."""

    def __init__(
        self,
        grammar: CaptionGrammar,
        base: str | LoadedModel = "shapes-64",
        clip: str | ClipScorer | None = None,
        settings: GeneratedSettings = GeneratedSettings(),
    ) -> None:
        self.grammar = grammar
        self.resolution = grammar.resolution
        self.settings = settings
        self._base, self._clip = base, clip
        self.stats = GenerationStats()

    def model(self) -> LoadedModel:
        if not isinstance(self._base, LoadedModel):
            self._base = load_model(self._base, device="cpu")
        return self._base

    def scorer(self) -> ClipScorer:
        if not isinstance(self._clip, ClipScorer):
            self._clip = ClipScorer.load(self._clip)
        return self._clip

    def vocabulary(self) -> list[str]:
        return self.grammar.vocabulary()

    def draw(self, rng: np.random.Generator) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """One batch of drawn pairs, filtered: inputs, instructions, edited pictures, regions."""
        s = self.settings
        triplets = [self.grammar.sample_captions(rng) for _ in range(s.batch)]
        sources, instructions, targets = (list(column) for column in zip(*triplets, strict=True))
        seeds = [int(x) for x in rng.integers(0, 2**31, s.batch)]
        share = float(rng.uniform(*s.share_range))
        before, after = draw_pairs(self.model(), sources, targets, seeds, share, s)
        directional, similarity = clip_filter_scores(self.scorer(), before, after, sources, targets)
        keep = (directional >= s.min_directional) & (similarity >= s.min_image_similarity)
        self.stats.drawn += len(keep)
        self.stats.kept += int(keep.sum())
        self.stats.directional += directional.tolist()
        self.stats.image_similarity += similarity.tolist()
        regions = changed_region(before[keep], after[keep], s.change_threshold, s.grow)
        return before[keep], [t for t, k in zip(instructions, keep, strict=True) if k], after[keep], regions

    def sample_triplets(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """``n`` kept triplets: (n, H, W, 3) inputs, instructions, edited pictures, (n, H, W) regions."""
        parts: list[tuple[np.ndarray, list[str], np.ndarray, np.ndarray]] = []
        kept = 0
        while kept < n:
            part = self.draw(rng)
            parts.append(part)
            kept += len(part[1])
            if self.stats.drawn >= 50 * self.settings.batch and self.stats.kept_share < 0.01:
                raise RetouchError(
                    f"the CLIP filter kept {self.stats.kept} of {self.stats.drawn} drawn pairs; lower "
                    "min_directional or min_image_similarity, or check the base model and the CLIP"
                )
        sources = np.concatenate([p[0] for p in parts])[:n]
        texts = [t for p in parts for t in p[1]][:n]
        targets = np.concatenate([p[2] for p in parts])[:n]
        regions = np.concatenate([p[3] for p in parts])[:n]
        return sources, texts, targets, regions


__all__ = [
    "CaptionGrammar", "GeneratedSettings", "GeneratedTriplets", "GenerationStats", "changed_region",
    "clip_filter_scores", "draw_pairs",
]
