"""Automatic edit masks, DiffEdit style (Couairon et al. 2022, "DiffEdit", section 3.2).

Noise the image latents to about t = 0.5 T, predict the noise under the source and the target
caption, and average ``|eps_target - eps_source|`` over noise draws and channels: the map is high
where the two captions disagree about the picture. It is then rescaled, smoothed, thresholded,
cut by the edit's region, optionally dilated (``MaskConfig.dilate``; off by default, since the
snaps below grow the mask to the object the picture shows), and upsampled to pixels. After the
edit, ``refine_mask`` snaps the pixel mask to the edges of the object (old or new).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from scipy import ndimage

from retouch.core.world import Region
from retouch.errors import RetouchError
from retouch.io.images import load_image


@dataclass(frozen=True)
class MaskConfig:
    num_draws: int = 4  # noise draws averaged (DiffEdit's n), batched into one UNet call; 4 masks as well as 10
    noise_level: float = 0.5  # DiffEdit's encoding ratio r: the map is taken at t = r * T
    clip_quantile: float = 0.99  # values above this quantile are clipped before rescaling to [0, 1]
    smooth_sigma: float = 1.0  # Gaussian smoothing of the map, in latent pixels
    threshold: float = 0.5  # DiffEdit's binarization threshold on the rescaled map
    dilate: int = 0  # latent pixels added around the thresholded, region-cut mask (the snaps grow it)
    change_tau: float = 24.0  # refine_mask: a pixel stands out when a channel differs by more (0-255)
    outline_slack: int = 2  # refine_mask, recolours: px around the old outline the new object may fill
    # background edits: the fraction of the steps during which every latent cell the object
    # touches keeps the input's latents (``blend``'s ``keep_object_mask``), while the layout forms
    keep_object_fraction: float = 0.5
    max_shift: int = 8  # replacements: px a new object is moved to sit where the old one was
    stray_share: float = 0.3  # background edits: strays are removed when under this share of the region

    @property
    def hold_fraction(self) -> float:
        """The old name of ``keep_object_fraction``, still read by scripts written before it."""
        return self.keep_object_fraction


@torch.no_grad()
def difference_map(
    pipe: StableDiffusionPipeline,
    latents: torch.Tensor,
    source_embeds: torch.Tensor,
    target_embeds: torch.Tensor,
    generator: torch.Generator | None,
    config: MaskConfig = MaskConfig(),
) -> np.ndarray:
    """DiffEdit's raw map ``mean |eps_target - eps_source|``, (h, w) float at latent resolution.

    With classifier-free guidance the empty-prompt prediction cancels from the difference
    (``eps_u + g (eps_t - eps_u) - eps_u - g (eps_s - eps_u) = g (eps_t - eps_s)``), and the
    rescaling removes ``g``, so the conditional predictions alone give DiffEdit's guided map.
    """
    # A DDIM scheduler only for its q(x_t | x_0) (diffusers' add_noise); its model input is unscaled.
    noiser = DDIMScheduler.from_config(pipe.scheduler.config)
    t = int(config.noise_level * (noiser.config.num_train_timesteps - 1))
    timestep = torch.tensor([t], device=latents.device)
    n = config.num_draws
    z0 = latents.expand(n, -1, -1, -1)  # (n, 4, h, w)
    noise = randn_tensor(z0.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    noisy = noiser.add_noise(z0, noise, timestep)
    embeds = torch.cat([source_embeds.expand(n, -1, -1), target_embeds.expand(n, -1, -1)])  # (2n, T, D)
    eps = pipe.unet(torch.cat([noisy, noisy]), timestep, encoder_hidden_states=embeds).sample
    eps_source, eps_target = eps.chunk(2)
    return (eps_target - eps_source).abs().mean(dim=(0, 1)).float().cpu().numpy()  # (h, w)


def normalize_map(raw: np.ndarray, config: MaskConfig = MaskConfig()) -> np.ndarray:
    """Clip the extreme values, rescale to [0, 1] (DiffEdit), and smooth; all zeros for a flat map."""
    clipped = np.minimum(raw, np.quantile(raw, config.clip_quantile))
    smooth = ndimage.gaussian_filter(clipped, config.smooth_sigma, mode="nearest")
    low, high = smooth.min(), smooth.max()
    if high - low <= 1e-8 * max(abs(high), 1e-12):
        return np.zeros_like(smooth)
    return (smooth - low) / (high - low)


def region_mask(normalized: np.ndarray, region: Region, config: MaskConfig = MaskConfig()) -> np.ndarray:
    """Cut the thresholded map by the edit's region; (h, w) bool at latent resolution.

    foreground: the strongest connected blob(s) of the map, holes filled.
    background: everything but the object, which shows as a low hole inside the high map.
    global: the whole picture.
    """
    if region == "global":
        return np.ones(normalized.shape, dtype=bool)
    high = normalized > config.threshold
    if region == "foreground":
        mask = ndimage.binary_fill_holes(_strongest(high, normalized))
    else:
        mask = ~ndimage.binary_fill_holes(_strongest(_away_from_border(~high), 1.0 - normalized))
    return ndimage.binary_dilation(mask, iterations=config.dilate) if config.dilate else mask


def _strongest(mask: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` holding at least half the weight of the heaviest one
    (the object, or a few objects of like importance; specks of noise drop out)."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask
    mass = ndimage.sum_labels(weight, labels, index=np.arange(1, count + 1))
    return np.isin(labels, np.flatnonzero(mass >= 0.5 * mass.max()) + 1)


def _away_from_border(mask: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` that do not touch the picture's border."""
    labels, _ = ndimage.label(mask)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return mask & ~np.isin(labels, border)


def upsample_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """(h, w) latent mask -> (h * factor, w * factor) pixel mask: each latent covers factor^2 pixels."""
    return np.kron(mask.astype(np.uint8), np.ones((factor, factor), dtype=np.uint8)).astype(bool)


def downsample_mask(mask: np.ndarray, factor: int, every: bool = False) -> np.ndarray:
    """(H, W) pixel mask -> (H / factor, W / factor): a latent is edited when any of its pixels is
    (with ``every``, only when all of them are)."""
    h, w = mask.shape[0] // factor, mask.shape[1] // factor
    cells = mask[: h * factor, : w * factor].reshape(h, factor, w, factor)
    return cells.all(axis=(1, 3)) if every else cells.any(axis=(1, 3))


def snap_background(
    coarse: np.ndarray, source: np.ndarray, factor: int, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """A background edit's pixel mask: everything but the object, as the picture draws it.

    ``coarse`` is the latent mask ``region_mask`` cut for the background; its hole (before the
    dilation), when it has one, points at the object. The object is every region of pixels that
    stands out from the background colour (the median outside the hole) and reaches into the
    hole; with no hole, or when nothing that stands out reaches into it (the map's hole missed a
    small object), the largest such region(s). Holes filled. Returns the upsampled ``coarse``
    when nothing stands out.
    """
    fallback = upsample_mask(coarse, factor)
    hole = ~coarse if not config.dilate else ndimage.binary_dilation(~coarse, iterations=config.dilate)
    hole = upsample_mask(hole, factor)
    has_hole = hole.any() and not hole.all()
    background = np.median(source[~hole] if has_hole else source.reshape(-1, source.shape[-1]), axis=0)
    stands_out = _close(_far_from(source, background, config.change_tau))
    objects = _touching(stands_out, hole) if has_hole else np.zeros_like(stands_out)
    if not objects.any():  # no hole, or one where nothing is drawn
        objects = _strongest(stands_out, np.ones(stands_out.shape))
    objects = ndimage.binary_fill_holes(objects)
    return ~objects if objects.any() and not objects.all() else fallback


def snap_foreground(
    coarse: np.ndarray, source: np.ndarray, factor: int, config: MaskConfig = MaskConfig(), box: bool = False
) -> np.ndarray:
    """A foreground edit's latent mask, grown to cover the whole object it touches.

    The map may light up only part of the object (a thin arm, one corner). Every region of
    pixels that stands out from the colour around ``coarse`` (the median of a ring just outside
    it) and overlaps ``coarse`` is the object; its latents join the mask, so the whole object is
    re-drawn. The ring lies one to two latent cells out, beyond an object the map only grazed.
    An object larger than half the picture is not trusted: ``coarse`` is returned as is.
    With ``box`` (the object is replaced by another shape), the object's bounding box joins: the
    new shape fills a different part of the same box, a triangle's empty corners where a square
    goes, and a mask cut to the old outline would clip it.
    When ``coarse`` touches no object at all (the map lit up empty background next to a small
    object), the mask moves to the nearest object: redrawing empty background would only draw
    the new object in another place beside the old one.
    """
    pixels = upsample_mask(coarse, factor)
    ring = ndimage.binary_dilation(pixels, iterations=2 * factor) & ~ndimage.binary_dilation(pixels, iterations=factor)
    if not ring.any():
        return coarse
    stands_out = _close(_far_from(source, np.median(source[ring], axis=0), config.change_tau))
    objects = ndimage.binary_fill_holes(_touching(stands_out, pixels))
    missed = not objects.any()
    if missed:
        objects = ndimage.binary_fill_holes(_nearest(stands_out, pixels, min_size=factor * factor))
    if box and objects.any():
        ys, xs = np.nonzero(objects)
        objects[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] = True
    if not objects.any() or objects.mean() > 0.5:
        return coarse
    return downsample_mask(objects, factor) if missed else coarse | downsample_mask(objects, factor)


def snap_to_object(
    coarse: np.ndarray,
    region: str,
    source: np.ndarray,
    factor: int,
    config: MaskConfig = MaskConfig(),
    box: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """An automatic latent mask snapped to the object ``source`` draws: (pixel mask, latent mask,
    keep-object latent mask), True = edited.

    background: everything but the object as drawn; its latents are edited where any pixel is,
    and early on (``blend``'s ``keep_object_mask``) only where every pixel is, so every cell the
    object touches is kept while the layout forms. foreground: grown to the whole object the map
    touches (keep-object mask = the latent mask). Any other region: ``coarse`` as it is.
    """
    if region == "background":
        pixels = snap_background(coarse, source, factor, config)
        return pixels, downsample_mask(pixels, factor), downsample_mask(pixels, factor, every=True)
    latent = snap_foreground(coarse, source, factor, config, box) if region == "foreground" else coarse
    return upsample_mask(latent, factor), latent, latent


def refine_mask(
    coarse: np.ndarray,
    source: np.ndarray,
    edited: np.ndarray,
    config: MaskConfig = MaskConfig(),
    keep_outline: bool = False,
) -> np.ndarray:
    """Snap a foreground edit's coarse pixel mask (latent cells are ``f`` pixels wide) to the
    edges of the object, old or new, that the pictures show.

    The background's colour is the median of the source in a ring just outside ``coarse``. The
    mask keeps the pixels inside ``coarse`` that stand out from it in the source (the old
    object) or in the edit (the new one), so a background the edit merely re-drew near the
    object goes back to the input; with ``keep_outline`` (a recolour) the new object counts only
    within ``outline_slack`` pixels of the old one (a recoloured object drawn a pixel or two off
    is taken whole, with no rim of the old colour, but cannot grow). Never grows ``coarse``;
    returns it when the cut is empty.
    """
    tau = config.change_tau
    ring = ndimage.binary_dilation(coarse, iterations=2) & ~coarse
    if not ring.any():
        return coarse
    surround = np.median(source[ring], axis=0)
    stands_out = _far_from(source, surround, tau)
    new_object = _far_from(edited, surround, tau)
    if keep_outline:  # the new object counts only within a few pixels of the old one's outline
        slack = config.outline_slack  # (scipy dilates until nothing changes when iterations is 0)
        new_object &= ndimage.binary_dilation(stands_out, iterations=slack) if slack > 0 else stands_out
    stands_out |= new_object
    refined = ndimage.binary_fill_holes(_strongest(_close(stands_out & coarse), np.ones(coarse.shape)))
    refined &= coarse
    return refined if refined.any() else coarse


def recolor_object(
    source: np.ndarray, edited: np.ndarray, coarse: np.ndarray, config: MaskConfig = MaskConfig()
) -> tuple[np.ndarray, np.ndarray]:
    """A recolour keeps the object's outline and shading: the model chooses the new colour, the
    picture keeps its structure. Returns (the recoloured picture, its pixel mask).

    The object is what stands out in ``source`` (H, W, 3) from the colour around ``coarse`` (H, W;
    the median of a 2-px ring); each of its pixels gets an alpha, its position on the line from
    that surround to the object's median colour (1 inside, a fraction on anti-aliased edges).
    The new colour is the median of what ``edited`` drew over the object's core; each pixel moves
    by alpha times the change of colour, so edges stay as smooth as the input's. With no object
    found, ``edited`` and ``coarse`` come back as they are.
    """
    ring = ndimage.binary_dilation(coarse, iterations=2) & ~coarse
    if not ring.any():
        return edited, coarse
    surround = np.median(source[ring], axis=0)
    stands_out = _far_from(source, surround, config.change_tau) & coarse
    if not stands_out.any():
        return edited, coarse
    obj = ndimage.binary_fill_holes(_strongest(_close(stands_out), np.ones(coarse.shape)))
    old = np.median(source[obj], axis=0)
    core = ndimage.binary_erosion(obj, iterations=1)
    core = core if core.any() else obj
    drawn = core & _far_from(edited, surround, config.change_tau)
    new = np.median(edited[drawn if drawn.any() else core], axis=0).astype(np.float64)
    span = old - surround
    near = ndimage.binary_dilation(obj, iterations=1) & coarse
    alpha = np.zeros(coarse.shape)
    alpha[near] = np.clip((source[near] - surround) @ span / max(float(span @ span), 1e-6), 0.0, 1.0)
    recolored = source + alpha[..., None] * (new - old)
    return np.clip(np.round(recolored), 0, 255).astype(source.dtype), alpha > 0


def align_object(
    source: np.ndarray, edited: np.ndarray, coarse: np.ndarray, config: MaskConfig = MaskConfig()
) -> np.ndarray:
    """A replaced object stays where the old one was: move what ``edited`` drew so that its
    bounding-box centre is the old object's.

    Old and new object are what stands out from the colour around ``coarse`` (the median of
    ``source`` in a 2-px ring) in ``source`` and in ``edited``, inside ``coarse``. The new one,
    grown by a pixel for its anti-aliased edge, moves by the difference of the centres (at most
    ``max_shift`` px; a larger one is left alone, as a drawing the model placed on purpose); the
    pixels it leaves take the median colour of the rest of what ``edited`` drew in ``coarse``.
    """
    ring = ndimage.binary_dilation(coarse, iterations=2) & ~coarse
    if not ring.any():
        return edited
    surround = np.median(source[ring], axis=0)
    old = _strongest(_close(_far_from(source, surround, config.change_tau) & coarse), np.ones(coarse.shape))
    new = _strongest(_close(_far_from(edited, surround, config.change_tau) & coarse), np.ones(coarse.shape))
    if not old.any() or not new.any():
        return edited
    dy, dx = np.round(_box_centre(old) - _box_centre(new)).astype(int)
    if (dy == 0 and dx == 0) or max(abs(dy), abs(dx)) > config.max_shift:
        return edited
    moving = ndimage.binary_dilation(new, iterations=1) & coarse
    rest = coarse & ~moving
    moved = edited.copy()
    moved[moving] = np.round(np.median(edited[rest], axis=0) if rest.any() else surround).astype(edited.dtype)
    ys, xs = np.nonzero(moving)
    ty, tx = ys + dy, xs + dx
    inside = (ty >= 0) & (ty < coarse.shape[0]) & (tx >= 0) & (tx < coarse.shape[1])
    moved[ty[inside], tx[inside]] = edited[ys[inside], xs[inside]]
    return moved


def _box_centre(mask: np.ndarray) -> np.ndarray:
    """(y, x) of the centre of ``mask``'s bounding box."""
    ys, xs = np.nonzero(mask)
    return np.array([(ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2])


def object_area(source: np.ndarray, edited: np.ndarray, mask: np.ndarray, config: MaskConfig = MaskConfig()) -> int:
    """Pixels inside ``mask`` that stand out from the colour around it (the median of ``source``
    in a 2-px ring) in ``source`` or in ``edited``: the old and the new object, as drawn."""
    ring = ndimage.binary_dilation(mask, iterations=2) & ~mask
    if not ring.any():
        return int(mask.sum())
    surround = np.median(source[ring], axis=0)
    stands_out = _far_from(source, surround, config.change_tau) | _far_from(edited, surround, config.change_tau)
    return int((stands_out & mask).sum())


def remove_strays(edited: np.ndarray, mask: np.ndarray, config: MaskConfig = MaskConfig()) -> np.ndarray:
    """A background edit draws no new object: paint out what stands out in the edited region.

    The region's own colour is the median of ``edited`` (H, W, 3) inside ``mask`` (H, W); the
    pixels that stand out from it (``change_tau``), grown by a pixel, take that colour, so a
    second copy of the kept object, or a rim of the old background, is gone. Only a region that
    is nearly one colour is touched: when the pixels that stand out are ``stray_share`` of it or
    more (a textured background), ``edited`` is returned as it is.
    """
    if not mask.any() or config.stray_share <= 0:
        return edited
    colour = np.median(edited[mask], axis=0)
    strays = _far_from(edited, colour, config.change_tau) & mask
    if not strays.any() or strays.sum() >= config.stray_share * mask.sum():
        return edited
    cleaned = edited.copy()
    cleaned[ndimage.binary_dilation(strays, iterations=1) & mask] = np.round(colour).astype(edited.dtype)
    return cleaned


def _nearest(mask: np.ndarray, area: np.ndarray, min_size: int) -> np.ndarray:
    """The connected component of ``mask`` (of at least ``min_size`` pixels) nearest to ``area``;
    on equal distance the larger. Empty when there is none."""
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    candidates = [k + 1 for k in range(count) if sizes[k] >= min_size]
    if not candidates:
        return np.zeros_like(mask)
    distance = ndimage.distance_transform_edt(~area)
    nearest = ndimage.minimum(distance, labels, index=candidates)
    best = min(zip(nearest, candidates, strict=True), key=lambda pair: (pair[0], -sizes[pair[1] - 1]))[1]
    return labels == best


def _touching(mask: np.ndarray, area: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` that overlap ``area``."""
    labels, _ = ndimage.label(mask)
    return np.isin(labels, np.setdiff1d(np.unique(labels[mask & area]), [0]))


def _far_from(pixels: np.ndarray, color: np.ndarray, tau: float) -> np.ndarray:
    """(H, W) bool: some channel of the pixel differs from ``color`` by more than ``tau``."""
    return np.abs(pixels.astype(np.float64) - color).max(axis=-1) > tau


def _close(mask: np.ndarray) -> np.ndarray:
    """Morphological closing (fills 1-px cracks) that leaves the picture's border alone: scipy's
    erosion treats outside the picture as False and would eat a 1-px frame."""
    padded = np.pad(mask, 1, mode="edge")
    return ndimage.binary_closing(padded, iterations=1)[1:-1, 1:-1]


def read_mask(path: str | os.PathLike[str], size: tuple[int, int]) -> np.ndarray:
    """A user's mask PNG (white = edit) as (H, W) bool; ``size`` is the image's (width, height)."""
    mask = load_image(Path(path), mode="L")
    if mask.size != size:
        raise RetouchError(
            f"the mask {path} is {mask.size[0]}x{mask.size[1]} but the image is {size[0]}x{size[1]}; "
            "draw the mask at the image's size (white = edit, black = keep)"
        )
    return mask_from_image(mask)


def mask_from_image(mask: Image.Image | np.ndarray) -> np.ndarray:
    """Greys above half -> True; refuses an empty mask."""
    values = np.asarray(mask.convert("L") if isinstance(mask, Image.Image) else mask)
    binary = values > 127 if values.dtype != bool else values
    if not binary.any():
        raise RetouchError("the mask is empty (all black): paint the region to edit white")
    return binary
