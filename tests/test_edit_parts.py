"""The pieces of `retouch edit`: region rules, masks, conversion, metrics, strength search, the
judges (the oracle, a tiny random CLIP) and the LLM classifier (against a local HTTP server)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from retouch.edit import MaskConfig, edit, masks
from retouch.edit.judge import clip_judge, make_judge, oracle_judge
from retouch.edit.layer import composite, feather_alpha
from retouch.edit.llm import chat_completions_url, llm_region
from retouch.edit.region import (
    RegionGuess,
    caption_region,
    combine,
    image_evidence,
    is_recolor,
    picture_changes,
    picture_region,
)
from retouch.edit.strength import search_strength, strength_for
from retouch.errors import RetouchError
from retouch.io.convert import check_size, pad_to_multiple, to_rgb
from retouch.metrics.masked import masked_metrics, masked_psnr, masked_ssim
from retouch.models.tiny import tiny_tokenizer
from retouch.worlds import shapes64 as w

# --- region from captions ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["background", "color", "shape", "size", "style"])
def test_canonical_captions_give_the_region_exactly(kind):
    rng = np.random.default_rng(7)
    for _ in range(20):
        pair = w.sample_edit(rng, kind)
        guess = caption_region(pair.source_caption, pair.target_caption)
        assert (guess.region, guess.confidence, guess.exact) == (pair.region, 1.0, True)
        assert guess.evidence["changed"] == [kind]


@pytest.mark.parametrize("kind", ["background", "color", "shape", "size", "style"])
def test_without_a_source_caption_the_oracle_reads_what_the_picture_lacks(kind):
    rng = np.random.default_rng(8)
    for _ in range(10):
        pair = w.sample_edit(rng, kind)
        lacking = picture_changes(pair.source.render(), pair.target_caption)
        assert lacking is not None and lacking[1] == [kind]
        guess = picture_region(lacking)
        assert (guess.region, guess.exact, guess.evidence["changed"]) == (pair.region, True, [kind])
    scene = w.sample_edit(rng, "color").target
    assert picture_changes(scene.render(), scene.caption()) is None  # nothing lacking: the map decides
    assert picture_changes(scene.render(), "a photo of a cat") is None  # not the world's caption
    assert picture_changes(scene.render()[:32], scene.caption()) is None  # not a picture the oracle reads


@pytest.mark.parametrize(
    "source, target, region",
    [
        ("a photo of a cat on a sofa", "a photo of a dog on a sofa", "foreground"),
        ("a red car in the street", "a blue car in the street", "foreground"),
        ("a woman in a red dress in a field", "a woman in a blue dress in a field", "foreground"),
        ("a man with a hat on a beach", "a man with a cap on a beach", "foreground"),
        ("a dog on the beach", "a dog on the snow", "background"),
        ("a boat on a calm lake", "a boat on a stormy lake", "background"),
        ("a cup on a wooden table", "a cup on a glass table", "background"),
        ("a house at night", "a house, sunset", "background"),
        ("a cat", "a cat, watercolor", "global"),
        ("a castle on a hill", "a castle on a hill in the style of van gogh", "global"),
        (
            "a large red circle on a blue background",
            "a large red circle on a blue background, pastel",
            "global",
        ),
        (
            "a large red circle on a blue background",
            "a small green circle on a blue background",
            "foreground",
        ),
    ],
)
def test_general_captions_follow_the_rules(source, target, region):
    assert caption_region(source, target).region == region


@pytest.mark.parametrize("target", ["a red car", "A  Red car", "a red car ", "a red, car"])
def test_identical_captions_are_refused(target):
    with pytest.raises(RetouchError, match="name no change.*--region"):
        caption_region("a red car", target)


def test_image_evidence_and_combination():
    blob = np.zeros((16, 16))
    blob[5:10, 6:11] = 1.0
    ring = 1.0 - blob
    fg, bg = image_evidence(blob), image_evidence(ring)
    assert fg["border"] == 0.0 and fg["p_background"] < 0.01 and bg["p_background"] > 0.9
    caption_fg = RegionGuess("foreground", 0.8)
    assert combine(caption_fg, fg).region == "foreground"
    assert combine(caption_fg, fg).confidence == pytest.approx(0.6 * 0.8 + 0.4 * (1 - fg["p_background"]), 1e-4)
    with pytest.raises(RetouchError, match="--region foreground, background or global"):
        combine(caption_fg, bg)  # the captions say foreground, the map says background: no decision
    exact = RegionGuess("background", 1.0, exact=True)
    assert combine(exact, fg).region == "background"  # canonical captions are not overruled


# --- masks ----------------------------------------------------------------------------------------


def test_region_masks_from_a_synthetic_difference_map():
    raw = np.full((16, 16), 0.1)
    raw[4:9, 5:10] = 2.0  # the object, where the captions disagree
    raw[14, 1] = 1.5  # a speck of noise
    normalized = masks.normalize_map(raw, masks.MaskConfig(smooth_sigma=0.5))
    fg = masks.region_mask(normalized, "foreground", masks.MaskConfig(dilate=0))
    assert fg[4:9, 5:10].all() and not fg[14, 1] and fg.sum() <= 40
    background_map = masks.normalize_map(2.1 - raw, masks.MaskConfig(smooth_sigma=0.5))
    bg = masks.region_mask(background_map, "background", masks.MaskConfig(dilate=0))
    assert not bg[5:8, 6:9].any() and bg[0].all() and bg[:, 0].all() and bg[14, 1]
    assert masks.region_mask(normalized, "global").all()
    assert not masks.region_mask(masks.normalize_map(np.ones((8, 8))), "foreground").any()


def test_difference_map_finds_where_the_captions_disagree():
    """A UNet whose noise prediction depends on the caption only inside a blob: DiffEdit's map
    (one batched call over the noise draws) is that blob, and the foreground mask recovers it."""
    from types import SimpleNamespace

    from retouch.models.tiny import tiny_components

    blob = torch.zeros((12, 12))
    blob[3:7, 5:9] = 1.0
    calls = []

    def unet(x_t, t, encoder_hidden_states):
        calls.append(x_t.shape[0])
        caption = encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None]  # (batch, 1, 1, 1)
        return SimpleNamespace(sample=0.5 * x_t + caption * blob)

    pipe = SimpleNamespace(unet=unet, scheduler=tiny_components()["scheduler"])
    latents = torch.randn((1, 4, 12, 12), generator=torch.Generator().manual_seed(0))
    config = masks.MaskConfig(num_draws=3, smooth_sigma=0.5, dilate=0)
    raw = masks.difference_map(
        pipe, latents, torch.zeros((1, 2, 8)), torch.ones((1, 2, 8)), torch.Generator().manual_seed(0), config
    )
    assert calls == [6] and np.allclose(raw, blob.numpy())  # 2 captions x 3 draws, in one call
    mask = masks.region_mask(masks.normalize_map(raw, config), "foreground", config)
    assert np.array_equal(mask, blob.numpy().astype(bool))
    assert image_evidence(masks.normalize_map(raw, config))["p_background"] < 0.05


def test_upsample_downsample_and_user_masks():
    latent = np.zeros((4, 4), dtype=bool)
    latent[1, 2] = True
    pixels = masks.upsample_mask(latent, 4)
    assert pixels.shape == (16, 16) and pixels.sum() == 16 and pixels[4:8, 8:12].all()
    assert np.array_equal(masks.downsample_mask(pixels, 4), latent)
    one_pixel = np.zeros((16, 16), dtype=bool)
    one_pixel[5, 9] = True
    assert np.array_equal(masks.downsample_mask(one_pixel, 4), latent)  # any pixel marks its latent
    assert not masks.downsample_mask(one_pixel, 4, every=True).any()  # every: all 16 pixels must be
    assert np.array_equal(masks.downsample_mask(pixels, 4, every=True), latent)
    with pytest.raises(RetouchError, match="mask is empty"):
        masks.mask_from_image(Image.new("L", (8, 8)))


def test_refine_mask_keeps_changed_pixels_and_the_source_object():
    scene = w.Scene("blue", "red", "circle", "small", x0=20, y0=20)
    source = scene.render()
    target = w.make_edit(scene, "shape", "square").target.render()
    coarse = np.zeros((64, 64), dtype=bool)
    coarse[12:48, 12:48] = True
    refined = masks.refine_mask(coarse, source, target)
    truth = (scene.coverage() > 0) | (w.make_edit(scene, "shape", "square").target.coverage() > 0)
    iou = (refined & truth).sum() / (refined | truth).sum()
    assert iou > 0.95 and not (refined & ~coarse).any()


def test_snap_background_keeps_the_object_as_drawn_however_wide_the_maps_hole():
    scene = w.Scene("blue", "red", "cross", "large", x0=10, y0=14)
    recolored = w.make_edit(scene, "background", "green")
    coarse = np.ones((16, 16), dtype=bool)
    coarse[2:14, 1:13] = False  # the map's hole: much wider than the cross
    snapped = masks.snap_background(coarse, scene.render(), 4)
    assert (snapped & recolored.mask).sum() / (snapped | recolored.mask).sum() > 0.95
    assert not snapped[(scene.coverage() == 1.0)].any()  # the kept object is not filled in
    no_hole = masks.snap_background(np.ones((16, 16), dtype=bool), scene.render(), 4)  # the largest object
    assert (no_hole & recolored.mask).sum() / (no_hole | recolored.mask).sum() > 0.95
    plain = w.Scene("blue", "red", "cross", "large", x0=10, y0=14).render() * 0 + 90  # nothing stands out
    assert masks.snap_background(np.ones((16, 16), dtype=bool), plain.astype(np.uint8), 4).all()


def test_snap_to_object_gives_background_edits_a_smaller_keep_object_mask():
    scene = w.Scene("blue", "red", "circle", "small", x0=21, y0=21)
    coarse = np.ones((16, 16), dtype=bool)
    coarse[6:10, 6:10] = False  # the map's hole at the object
    pixels, latent, early = masks.snap_to_object(coarse, "background", scene.render(), 4)
    assert np.array_equal(latent, masks.downsample_mask(pixels, 4))
    assert np.array_equal(early, masks.downsample_mask(pixels, 4, every=True))
    assert (early <= latent).all() and (latent & ~early).any()  # the object's edge cells: edited later
    same = masks.snap_to_object(coarse, "global", scene.render(), 4)
    assert np.array_equal(same[1], coarse) and np.array_equal(same[2], coarse)


def test_feathered_composite_keeps_far_pixels_bit_for_bit():
    rng = np.random.default_rng(0)
    source, edited = rng.integers(0, 256, (2, 20, 24, 3), dtype=np.uint8)
    mask = np.zeros((20, 24), dtype=bool)
    mask[5:10, 6:12] = True
    alpha = feather_alpha(mask, 2)
    out = composite(source, edited, alpha)
    assert np.array_equal(out[alpha == 0], source[alpha == 0]) and np.array_equal(out[mask], edited[mask])
    assert alpha[4, 8] == pytest.approx(2 / 3) and alpha[3, 8] == pytest.approx(1 / 3)  # a linear ramp
    assert alpha[2, 8] == 0 and alpha[:, :3].max() == 0 and (alpha > 0).sum() < mask.sum() + 90


# --- the Blended Latent Diffusion loop, with a denoiser that knows the answer --------------------


@pytest.mark.parametrize("scheduler_name", ["ddim", "euler", "dpm++"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_blend_loop_lands_on_the_target_inside_and_the_input_outside(scheduler_name, strength):
    """A perfect denoiser toward ``z_target`` (eps from the model input, which is DDPM's x_t for
    every scheduler once scale_model_input has run): the loop must end on ``z_target`` inside the
    mask and on ``z0`` exactly outside it, whatever the noise level it starts from."""
    from types import SimpleNamespace

    from retouch.core.schedulers import make_scheduler
    from retouch.edit.blend import blended_latent_diffusion
    from retouch.models.tiny import tiny_components

    scheduler = make_scheduler(scheduler_name, tiny_components()["scheduler"].config)
    alphas = scheduler.alphas_cumprod
    generator = torch.Generator().manual_seed(0)
    z0, z_target = torch.randn((2, 1, 4, 8, 8), generator=generator)
    mask = np.zeros((8, 8), dtype=bool)
    mask[2:6, 1:5] = True

    def unet(x_t, t, encoder_hidden_states):
        alpha = alphas[int(t)]
        return SimpleNamespace(sample=(x_t - alpha.sqrt() * z_target) / (1 - alpha).sqrt())

    embeds = torch.zeros((1, 3, 8))
    z = blended_latent_diffusion(
        SimpleNamespace(unet=unet), z0, mask, embeds, embeds, scheduler, strength, 10, 7.5, generator
    )
    inside = torch.from_numpy(mask)[None, None].expand_as(z)
    assert torch.equal(z[~inside], z0[~inside])
    error = (z[inside] - z_target[inside]).abs()
    assert (z0[inside] - z_target[inside]).abs().mean() > 1.0  # far apart at the start
    if scheduler_name == "ddim":  # its last step lands on alphas_cumprod[0] < 1, a hair short of x0
        assert error.mean() < 0.05 and error.max() < 0.25, error.max()
    else:
        assert error.max() < 1e-4, error.max()


def test_blend_keep_object_mask_holds_its_cells_for_the_first_steps_only():
    """A background edit's ``keep_object_mask``: the cells it leaves out follow the input while
    the first ``keep_object_fraction`` of the steps run, and are edited after them; with every
    step in that fraction they end on the input. The old keywords give the same latents."""
    from types import SimpleNamespace

    from retouch.core.schedulers import make_scheduler
    from retouch.edit.blend import blended_latent_diffusion
    from retouch.models.tiny import tiny_components

    generator = torch.Generator().manual_seed(0)
    z0, z_target = torch.randn((2, 1, 4, 8, 8), generator=generator)
    mask = np.zeros((8, 8), dtype=bool)
    mask[1:7, 1:7] = True
    early = mask.copy()
    early[3:5, 3:5] = False  # the object's cells: kept while the layout forms

    def run(fraction: float, old_names: bool = False) -> torch.Tensor:
        scheduler = make_scheduler("euler", tiny_components()["scheduler"].config)
        alphas = scheduler.alphas_cumprod

        def unet(x_t, t, encoder_hidden_states):
            alpha = alphas[int(t)]
            return SimpleNamespace(sample=(x_t - alpha.sqrt() * z_target) / (1 - alpha).sqrt())

        embeds = torch.zeros((1, 3, 8))
        keep = {"early_mask": early, "early_fraction": fraction} if old_names else {
            "keep_object_mask": early, "keep_object_fraction": fraction
        }
        return blended_latent_diffusion(
            SimpleNamespace(unet=unet),
            z0,
            mask,
            embeds,
            embeds,
            scheduler,
            strength=1.0,
            steps=10,
            guidance_scale=7.5,
            generator=torch.Generator().manual_seed(1),
            **keep,
        )

    held = torch.from_numpy(mask & ~early)[None, None].expand_as(z0)
    assert torch.equal(run(1.0)[held], z0[held])  # held throughout: the input
    released = run(0.5)[held]
    assert (released - z_target[held]).abs().max() < 1e-4  # released halfway: edited like the rest
    assert torch.equal(run(0.5, old_names=True), run(0.5))
    assert torch.equal(
        run(0.5)[~torch.from_numpy(mask)[None, None].expand_as(z0)],
        z0[~torch.from_numpy(mask)[None, None].expand_as(z0)],
    )


# --- input conversion -----------------------------------------------------------------------------


def test_pad_to_multiple_reflects_and_keeps_the_original():
    pixels = np.arange(7 * 5 * 3, dtype=np.uint8).reshape(7, 5, 3)
    padded, size = pad_to_multiple(pixels, 4)
    assert padded.shape == (8, 8, 3) and size == (7, 5) and np.array_equal(padded[:7, :5], pixels)
    assert np.array_equal(padded[7, :5], pixels[5]) and np.array_equal(padded[:7, 5], pixels[:, 3])
    tiny, _ = pad_to_multiple(np.zeros((2, 2, 3), np.uint8), 8)  # too small to reflect: edge
    assert tiny.shape == (8, 8, 3)


def test_to_rgb_notes_every_conversion():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    converted = to_rgb(rgba)
    assert converted.image.getpixel((0, 0)) == (255, 255, 255) and "white" in converted.notes[0]
    deep = to_rgb(Image.fromarray(np.full((3, 3), 65535, dtype=np.uint16)))
    assert deep.mode == "I;16" and deep.image.getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("RGB", (3, 3))).notes == []
    with pytest.raises(RetouchError, match="2048 pixels on a side"):
        check_size(2049, 16)
    with pytest.raises(RetouchError, match="4.0 megapixels"):
        check_size(2048, 2000)


# --- metrics --------------------------------------------------------------------------------------


def test_masked_metrics_numbers():
    a = np.zeros((10, 10, 3), dtype=np.uint8)
    b = a.copy()
    b[:5] = 10
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5] = True
    assert masked_psnr(a, b, mask) == pytest.approx(10 * math.log10(255**2 / 100))
    assert masked_psnr(a, b, ~mask) == math.inf and math.isnan(masked_psnr(a, b, np.zeros_like(mask)))
    assert masked_ssim(a, a, mask) == pytest.approx(1.0)
    report = masked_metrics(a, b, mask)
    assert report["inside"]["pixels"] == 50 and report["outside"]["psnr"] == math.inf


# --- strength search and judges -------------------------------------------------------------------


def test_bisection_finds_the_smallest_strength_that_takes():
    tried = []

    def run(strength: float) -> float:
        tried.append(strength)
        return strength

    strength, result, trace = search_strength(run, lambda s: (s - 0.61, s >= 0.61), steps=25)
    assert strength == result == strength_for(15, 25) == 0.62  # 15 of 25 steps: the first >= 0.61
    assert trace[0].strength == 1.0 and trace[0].took and len(trace) <= 6
    assert all(t.took == (t.strength >= 0.61) for t in trace)
    never, _, trace = search_strength(run, lambda s: (0.0, False), steps=25)
    assert never == 1.0 and len(trace) == 1 and not trace[0].took


def test_oracle_judge_reads_the_rendered_target(tmp_path, monkeypatch):
    monkeypatch.setattr("retouch.metrics.clip_score.bundled_clip_path", lambda: tmp_path / "no-clip")
    pair = w.make_edit(w.Scene("blue", "red", "circle", "large", x0=10, y0=12), "color", "green")
    judge = oracle_judge(pair.target_caption)
    score, took = judge(Image.fromarray(pair.target.render()))
    assert score > 0.98 and took
    score, took = judge(Image.fromarray(pair.source.render()))
    assert 0.75 < score < 0.81 and not took  # every field but the colour (0: red is 213 RGB units from green)
    default = make_judge(None, pair.source_caption, pair.target_caption)  # canonical: the oracle
    assert default(Image.fromarray(pair.target.render()))[1]
    assert not default(Image.fromarray(pair.source.render()))[1]
    with pytest.raises(RetouchError, match="--judge PATH"):
        make_judge(None, "a dog", "a cat")


def test_oracle_judge_scores_how_close_and_where(tmp_path):
    """The continuous score ranks a clean target colour above a muddy one the oracle still reads as
    the target, and, given the input, an object moved more than 4 px is not accepted."""
    source = w.Scene("blue", "red", "square", "large", x0=14, y0=14)
    pair = w.make_edit(source, "color", "green")
    judge = oracle_judge(pair.target_caption, reference=source.render())
    clean = pair.target.render()
    muddy = clean.copy()
    muddy[pair.target.coverage() > 0.99] = (80, 150, 60)  # still nearest to green, 31 units off
    (clean_score, clean_took), (muddy_score, muddy_took) = judge(Image.fromarray(clean)), judge(Image.fromarray(muddy))
    assert clean_took and muddy_took and clean_score > muddy_score + 0.05
    moved = w.Scene("blue", "green", "square", "large", x0=20, y0=14).render()  # 6 px to the right
    assert w.closeness(moved, pair.target_caption, source.render())["position"] == pytest.approx(0.25)
    assert not judge(Image.fromarray(moved))[1]
    assert oracle_judge(pair.target_caption)(Image.fromarray(moved))[1]  # no reference: place not judged


def test_clip_judge_from_a_local_folder(tmp_path):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer = tiny_tokenizer()
    special = {k: getattr(tokenizer, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    layers = {"hidden_size": 16, "intermediate_size": 16, "num_attention_heads": 2, "num_hidden_layers": 1}
    config = CLIPConfig(
        text_config={"vocab_size": len(tokenizer), "max_position_embeddings": 77, **layers, **special},
        vision_config={"image_size": 32, "patch_size": 8, **layers},
        projection_dim=8,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        CLIPModel(config).save_pretrained(tmp_path / "clip")
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp_path / "clip")
    judge = clip_judge(tmp_path / "clip", "a red circle", "a green circle")
    score, took = judge(Image.new("RGB", (64, 64), (200, 30, 30)))
    assert -2.0 <= score <= 2.0 and took == (score > 0)
    assert make_judge(str(tmp_path / "clip"), "a dog", "a cat")(Image.new("RGB", (8, 8)))[1] in (True, False)
    with pytest.raises(RetouchError, match="cannot load the CLIP judge"):
        clip_judge(tmp_path / "missing", "a dog", "a cat")


# --- the LLM classifier ---------------------------------------------------------------------------


class _ChatServer:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers ``content``."""

    def __init__(self, content: str):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "body": body})
                reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(reply.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def chat_server():
    servers: list[_ChatServer] = []

    def start(content: str) -> _ChatServer:
        servers.append(_ChatServer(content))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_llm_classifier_asks_a_local_endpoint(chat_server):
    server = chat_server('```json\n{"region": "background", "confidence": 0.9}\n```')
    guess = llm_region("a dog on grass", "a dog on sand", server.url)
    assert (guess.region, guess.confidence, guess.evidence["rule"]) == ("background", 0.9, "llm")
    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert "a dog on sand" in request["body"]["messages"][-1]["content"]
    assert chat_completions_url(server.url + "/v1/") == server.url + "/v1/chat/completions"


def test_llm_classifier_errors_are_clear(chat_server):
    with pytest.raises(RetouchError, match="did not answer"):
        llm_region("a dog", "a cat", "http://127.0.0.1:9", timeout=2)
    with pytest.raises(RetouchError, match="no usable answer"):
        llm_region("a dog", "a cat", chat_server("I think it is the dog").url)
    with pytest.raises(RetouchError, match="answered region 'sky'"):
        llm_region("a dog", "a cat", chat_server('{"region": "sky"}').url)


def test_llm_classifier_decides_an_edit_through_the_api(chat_server, tiny_model):
    server = chat_server('{"region": "foreground", "confidence": 0.95}')
    pixels = np.full((32, 32, 3), (40, 90, 220), dtype=np.uint8)
    pixels[8:20, 10:22] = (220, 40, 40)
    result = edit(
        tiny_model, pixels, "a red box", "a green box", classifier="llm", llm_url=server.url,
        seed=0, steps=2, mask_config=MaskConfig(num_draws=2),
    )  # fmt: skip
    evidence = result.report["region_evidence"]
    assert len(server.requests) == 1 and evidence["captions"]["rule"] == "llm"
    assert result.report["region"] == evidence["captions"]["region"] == "foreground"
    assert result.recipe["region"] == "foreground"  # a replay needs no endpoint
    with pytest.raises(RetouchError, match="--llm-url"):
        edit(tiny_model, pixels, "a red box", "a green box", classifier="llm")


def test_refine_mask_leaves_a_redrawn_background_to_the_input():
    scene = w.Scene("blue", "red", "circle", "large", x0=14, y0=14)
    source = scene.render()
    pair = w.make_edit(scene, "color", "yellow")
    edited = pair.target.render().astype(np.int16)
    edited[~pair.mask] += 15  # the edit re-drew the background a little off: not part of the edit
    edited = edited.clip(0, 255).astype(np.uint8)
    coarse = ndimage.binary_dilation(pair.mask, iterations=6)
    refined = masks.refine_mask(coarse, source, edited)
    assert (refined & pair.mask).sum() / (refined | pair.mask).sum() > 0.95


def test_recolor_keeps_the_source_outline():
    assert is_recolor("a large red circle on a blue background", "a large green circle on a blue background")
    assert is_recolor("a red car parked on the street", "a dark blue car parked on the street") is False
    assert is_recolor("a red car parked on the street", "a blue car parked on the street")
    assert not is_recolor("a large red circle on a blue background", "a large red cross on a blue background")
    scene = w.Scene("blue", "red", "circle", "small", x0=20, y0=20)
    blob = w.Scene("blue", "green", "circle", "large", x0=12, y0=12).render()  # drawn too big
    coarse = np.zeros((64, 64), dtype=bool)
    coarse[8:56, 8:56] = True
    truth = scene.coverage() > 0
    exact = masks.refine_mask(coarse, scene.render(), blob, MaskConfig(outline_slack=0), keep_outline=True)
    assert (exact & truth).sum() / (exact | truth).sum() > 0.9
    slack = MaskConfig().outline_slack  # the new object may fill a few pixels around the old outline, no more
    refined = masks.refine_mask(coarse, scene.render(), blob, keep_outline=True)
    assert refined[truth].mean() > 0.97
    assert not (refined & ~ndimage.binary_dilation(truth, iterations=slack + 1)).any()
    assert (refined & ~truth).any()  # a blob drawn too big does fill them


def test_snap_foreground_grows_a_partial_map_to_the_whole_object():
    scene = w.Scene("yellow", "purple", "cross", "large", x0=14, y0=10)
    coarse = np.zeros((16, 16), dtype=bool)
    coarse[3:5, 6:9] = True  # the map lit up the top arm only
    snapped = masks.snap_foreground(coarse, scene.render(), 4)
    covered = masks.upsample_mask(snapped, 4)
    assert covered[scene.coverage() > 0].all()
    assert snapped.sum() < 0.5 * snapped.size and (snapped | coarse).sum() == snapped.sum()


def test_snap_foreground_moves_a_map_that_missed_the_object_onto_the_nearest_one():
    scene = w.Scene("gray", "purple", "cross", "small", x0=6, y0=40)  # bottom left, 20 px
    coarse = np.zeros((16, 16), dtype=bool)
    coarse[2:5, 9:12] = True  # empty background, top right
    snapped = masks.snap_foreground(coarse, scene.render(), 4, box=True)
    covered = masks.upsample_mask(snapped, 4)
    assert covered[scene.coverage() > 0].all()  # the object's box, and nothing of the empty patch
    assert not (snapped & coarse).any() and snapped.sum() <= 6 * 6  # a 20-px box spans 6 cells at most
