"""PIE-Bench's edit metrics (``retouch evaluate --pie``): the formulas against hand-computed values,
the SqueezeNet LPIPS against torchmetrics', CLIP and structure distance on tiny random models, the CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTConfig, ViTModel

from retouch.cli import main
from retouch.io.png import save_png
from retouch.metrics.clip_score import ClipScorer
from retouch.metrics.lpips import load_lpips
from retouch.metrics.pie import COLUMNS, background_metrics, clip_similarities, paper_row, pie_mask, pie_metrics
from retouch.metrics.pie_evaluate import evaluate_pie, load_pie_scorers
from retouch.metrics.squeezenet import squeezenet1_1_features
from retouch.metrics.structure import (
    dino_input,
    key_projection,
    keys_self_similarity,
    load_dino,
    resized_size,
    structure_distance,
)
from retouch.metrics.weights import MissingWeights
from retouch.train.clip import ClipTrainConfig, save_untrained_clip

TINY_CLIP = ClipTrainConfig(
    vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, projection_dim=16
)
GREY, LIGHTER = 102, 153  # 0.4 and 0.6 in PIE-Bench's [0, 1] pixels


def grey(size: int = 32, value: int = GREY) -> np.ndarray:
    return np.full((size, size, 3), value, dtype=np.uint8)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A tiny random CLIP, DINO-like ViT and SqueezeNet backbone (torchvision's key names), saved."""
    root = tmp_path_factory.mktemp("pie_models")
    torch.manual_seed(0)
    vit = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=32)
    ViTModel(vit, add_pooling_layer=False).save_pretrained(root / "dino")
    backbone = torch.nn.Sequential(*squeezenet1_1_features())
    for p in backbone.parameters():
        p.data = torch.randn_like(p) * 0.1
    torch.save({f"features.{k}": v for k, v in backbone.state_dict().items()}, root / "squeezenet1_1-b8a52dc0.pth")
    return {
        "clip": save_untrained_clip(root / "clip", TINY_CLIP),
        "dino": root / "dino",
        "squeeze": root / "squeezenet1_1-b8a52dc0.pth",
    }


def test_pie_mask_marks_the_frame_as_edited():
    mask = np.zeros((5, 6), dtype=bool)
    mask[2, 2] = True
    framed = pie_mask(mask)
    assert framed.dtype == np.float32 and framed.sum() == 1 + 2 * 6 + 2 * 3
    assert framed[2, 2] == 1 and framed[1:-1, 1:-1].sum() == 1
    assert pie_mask(mask, border=False).sum() == 1


def test_identical_or_changed_only_inside_the_mask_leaves_the_background_perfect():
    source, mask = grey(), np.zeros((32, 32), dtype=bool)
    mask[8:16, 8:16] = True
    for edited in (source.copy(), _changed(source, slice(8, 16))):
        values = background_metrics(source, edited, pie_mask(mask))
        assert values == {"psnr_unedit_part": math.inf, "mse_unedit_part": 0.0, "ssim_unedit_part": 1.0}
    framed = source.copy()
    framed[0, :] = 255  # PIE-Bench's frame counts as edited
    assert background_metrics(source, framed, pie_mask(mask))["mse_unedit_part"] == 0.0
    assert background_metrics(source, framed, pie_mask(mask, border=False))["mse_unedit_part"] > 0


def _changed(picture: np.ndarray, rows: slice) -> np.ndarray:
    out = picture.copy()
    out[rows, 8:16] = np.random.default_rng(0).integers(0, 256, out[rows, 8:16].shape)
    return out


def test_a_change_outside_the_mask_counts_over_the_whole_picture():
    source, mask = grey(), np.zeros((32, 32), dtype=bool)
    mask[:16] = True  # half the picture edited
    edited = source.copy()
    edited[20:24, 20:24] = LIGHTER  # 16 background pixels 0.2 brighter
    values = background_metrics(source, edited, pie_mask(mask, border=False))
    # PIE-Bench multiplies by 1 - mask and averages over every pixel, the edited half included
    mse = 16 * 3 * 0.2**2 / (32 * 32 * 3)
    assert values["mse_unedit_part"] == pytest.approx(mse, rel=1e-4)
    assert values["psnr_unedit_part"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-4)  # 32.04 dB
    assert 0 < values["ssim_unedit_part"] < 1


def test_ssim_of_two_flat_pictures_is_the_luminance_term():
    values = background_metrics(grey(), grey(value=LIGHTER), pie_mask(np.zeros((32, 32)), border=False))
    c1 = 0.01**2  # (k1 * data_range)^2; the structure terms are C2 / C2 on flat pictures
    luminance = (2 * 0.4 * 0.6 + c1) / (0.4**2 + 0.6**2 + c1)  # 0.92309
    assert values["ssim_unedit_part"] == pytest.approx(luminance, rel=5e-4)  # float32, as PIE-Bench: 0.92285


def test_an_all_edited_mask_gives_nan_as_pie_bench():
    values = background_metrics(grey(), grey(value=LIGHTER), pie_mask(np.ones((32, 32))))
    assert set(values) == {"psnr_unedit_part", "mse_unedit_part", "ssim_unedit_part"}
    assert all(math.isnan(v) for v in values.values())


def test_squeezenet_lpips_matches_torchmetrics(models, monkeypatch):
    import torchmetrics.functional.image.lpips as reference

    ours = load_lpips(models["squeeze"], net="squeeze")  # heads: the file torchmetrics installs
    backbone = torch.nn.Sequential(*squeezenet1_1_features())
    backbone.load_state_dict({k.removeprefix("features."): v for k, v in torch.load(models["squeeze"]).items()})
    monkeypatch.setattr(reference, "_get_tv_model_features", lambda net, pretrained=False: backbone)
    theirs = reference._NoTrainLpips(net="squeeze")
    x, y = torch.rand(2, 3, 40, 48) * 2 - 1, torch.rand(2, 3, 40, 48) * 2 - 1
    assert torch.allclose(ours(x, y), theirs(x, y).flatten(), rtol=1e-5)
    torch.save(theirs.state_dict(), models["squeeze"].with_name("torchmetrics_squeeze.pth"))
    again = load_lpips(models["squeeze"].with_name("torchmetrics_squeeze.pth"), net="squeeze")
    assert torch.allclose(again(x, y), ours(x, y))
    source, edited = grey(), grey()
    edited[20:24, 20:24] = LIGHTER
    mask = pie_mask(np.zeros((32, 32)))
    assert background_metrics(source, source, mask, ours)["lpips_unedit_part"] == 0.0
    lpips = background_metrics(source, edited, mask, ours)["lpips_unedit_part"]
    a, b = (torch.from_numpy(p * (1 - mask)[..., None] / 127.5 - 1).permute(2, 0, 1)[None] for p in (source, edited))
    expected = theirs(a.float(), b.float())
    assert lpips == pytest.approx(float(expected), rel=1e-4) and lpips > 0


def test_missing_squeezenet_says_which_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RETOUCH_METRICS_DIR", str(tmp_path))
    with pytest.raises(MissingWeights, match=r"SqueezeNet.*squeezenet1_1-b8a52dc0\.pth"):
        load_lpips(net="squeeze")


def test_clip_columns_are_torchmetrics_scores(models):
    clip = ClipScorer.load(models["clip"])
    rng = np.random.default_rng(1)
    source, edited = (rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2))
    mask = np.zeros((32, 32), dtype=np.float32)
    mask[8:20, 8:20] = 1
    values = clip_similarities(clip, source, edited, mask, "a [red] square", "a blue square")
    inside = edited * mask[..., None].astype(np.uint8)
    expected = [clip.score([p], [t])[0] for p, t in ((source, "a blue square"), (edited, "a red square"))]
    expected.append(clip.score([inside], ["a red square"])[0])
    got = [values[f"clip_similarity_{k}"] for k in ("source_image", "target_image", "target_image_edit_part")]
    assert got == pytest.approx([100 * max(e, 0) for e in expected], rel=1e-4, abs=1e-4)
    assert got[1] != pytest.approx(got[2])  # the edited part is its own picture
    only_target = clip_similarities(clip, source, edited, np.zeros_like(mask), "a red square")
    assert "clip_similarity_source_image" not in only_target
    assert math.isnan(only_target["clip_similarity_target_image_edit_part"])


def test_structure_distance_follows_pie_bench(models):
    dino = load_dino(models["dino"])
    assert key_projection(dino) is dino.layers[-1].attention.k_proj  # block 11, or the last of fewer
    assert resized_size(512, 512) == (224, 224) and resized_size(512, 768) == (224, 336)
    assert resized_size(100, 1000) == (48, 480)  # the long side held at 480
    white = dino_input(np.full((512, 512, 3), 255, dtype=np.uint8))
    assert white.shape == (1, 3, 224, 224)  # 0..255 pixels, not 0..1, as PIE-Bench feeds them
    assert float(white[0, 0, 0, 0]) == pytest.approx((255 - 0.485) / 0.229)
    rng = np.random.default_rng(2)
    a, b = (rng.integers(0, 256, (64, 96, 3), dtype=np.uint8) for _ in range(2))
    sim_a, sim_b = keys_self_similarity(dino, a), keys_self_similarity(dino, b)
    assert sim_a.shape == (1 + 7 * 10, 1 + 7 * 10)  # 224x336 in 32-pixel patches, plus CLS
    assert torch.allclose(torch.diagonal(sim_a), torch.ones(71), atol=1e-5)
    assert structure_distance(dino, a, a) == 0.0
    assert structure_distance(dino, a, b) == pytest.approx(float(((sim_a - sim_b) ** 2).mean()), rel=1e-5)
    with pytest.raises(MissingWeights, match="--dino"):
        load_dino(models["dino"].parent / "nowhere")


def test_pie_metrics_keeps_pie_bench_columns_and_paper_units(models):
    scorers = load_pie_scorers(models["clip"], models["squeeze"], models["dino"])
    source, edited, mask = grey(), grey(), np.zeros((32, 32), dtype=bool)
    edited[20:24, 20:24] = LIGHTER
    row = pie_metrics(source, edited, mask, "a red square", clip=scorers.clip, lpips=scorers.lpips, dino=scorers.dino)
    assert tuple(row) == tuple(c for c in COLUMNS if c != "clip_similarity_source_image")  # no source prompt
    assert COLUMNS[:3] == ("structure_distance", "psnr_unedit_part", "lpips_unedit_part")  # evaluate.py's order
    paper = paper_row(row)
    assert paper["MSE x10^4"] == pytest.approx(row["mse_unedit_part"] * 1e4)
    assert paper["SSIM x10^2"] == pytest.approx(row["ssim_unedit_part"] * 100)
    assert list(pie_metrics(source, edited, mask)) == ["psnr_unedit_part", "mse_unedit_part", "ssim_unedit_part"]


def _edit_outputs(folder: Path) -> dict[str, np.ndarray]:
    """What ``retouch edit`` leaves: OUT.png with its recipe (input path, prompts) and OUT.mask.png."""
    folder.mkdir()
    source, edited, mask = grey(), grey(), np.zeros((32, 32), dtype=np.uint8)
    edited[8:16, 8:16] = LIGHTER
    edited[20:24, 20:24] = LIGHTER
    mask[6:18, 6:18] = 255
    Image.fromarray(source).save(folder / "in.png")
    recipe = dict(task="edit", image=str(folder / "in.png"), source="a grey square", target="a [white] square")
    recipe.update(
        prompt="a white square", width=32, height=32, steps=1, scheduler="ddim", guidance_scale=7.5, seed=0, model="x"
    )
    save_png(Image.fromarray(edited), folder / "out.png", recipe)
    Image.fromarray(mask).save(folder / "out.mask.png")
    return {"source": source, "edited": edited, "mask": mask > 127}


def test_cli_reads_an_edit_beside_its_mask_and_recipe(models, tmp_path, capsys):
    pictures = _edit_outputs(tmp_path / "edit")
    nets = ["--clip", str(models["clip"]), "--dino", str(models["dino"]), "--lpips-weights", str(models["squeeze"])]
    out = tmp_path / "report"
    assert main(["evaluate", "--pie", "--images", str(tmp_path / "edit" / "out.png"), *nets, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| file | structure_distance | psnr_unedit_part |" in printed and "| MSE x10^4 |" in printed
    assert "only on DINO ViT-B/8" in printed
    row = json.loads((out / "pie_bench.json").read_text())["rows"][0]
    scorers = load_pie_scorers(models["clip"], models["squeeze"], models["dino"])
    expected = pie_metrics(
        *pictures.values(), "a white square", "a grey square", clip=scorers.clip, lpips=scorers.lpips, dino=scorers.dino
    )
    assert row.pop("file") == "out.png" and row == pytest.approx(expected, rel=1e-5)
    assert row["mse_unedit_part"] == pytest.approx(16 * 3 * 0.2**2 / (32 * 32 * 3), rel=1e-4)  # the 8x8 block is inside
    assert (out / "pie_bench.csv").read_text().startswith("file,structure_distance,psnr_unedit_part")


def test_cli_folder_mode_and_bad_input(models, tmp_path, capsys):
    pictures = _edit_outputs(tmp_path / "edit")
    for name in ("references", "masks", "images"):
        (tmp_path / name).mkdir()
    for k in range(2):
        Image.fromarray(pictures["source"]).save(tmp_path / "references" / f"{k}.png")
        Image.fromarray(pictures["edited"]).save(tmp_path / "images" / f"{k}.png")
        Image.fromarray(pictures["mask"].astype(np.uint8) * 255).save(tmp_path / "masks" / f"{k}.png")
    captions = tmp_path / "captions.jsonl"
    captions.write_text(
        "".join(json.dumps({"file_name": f"{k}.png", "text": "a white square"}) + "\n" for k in range(2))
    )
    folders = ["--images", str(tmp_path / "images"), "--references", str(tmp_path / "references")]
    folders += ["--masks", str(tmp_path / "masks"), "--captions", str(captions), "--clip", str(models["clip"])]
    assert main(["evaluate", "--pie", *folders, "--out", str(tmp_path / "report"), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["pairs"] == 2 and "clip_similarity_target_image" in payload["summary"]
    assert any("structure_distance skipped" in note for note in payload["notes"])
    assert any("only on openai/clip-vit-large-patch14" in note for note in payload["notes"])  # a tiny CLIP
    evaluation = evaluate_pie(tmp_path / "images", tmp_path / "references", tmp_path / "masks", "a white square")
    assert [row["file"] for row in evaluation.rows] == ["0.png", "1.png"]

    (tmp_path / "edit" / "out.mask.png").unlink()
    argv = ["evaluate", "--pie", "--images", str(tmp_path / "edit" / "out.png"), "--out", str(tmp_path / "r2")]
    assert main(argv) == 2
    assert "no edit mask for" in capsys.readouterr().err
    small = tmp_path / "small.png"
    Image.fromarray(grey(16)).save(small)
    argv = ["evaluate", "--pie", "--images", str(small), "--references", str(tmp_path / "edit" / "in.png")]
    assert main([*argv, "--masks", str(tmp_path / "masks" / "0.png"), "--out", str(tmp_path / "r3")]) == 2
    assert "one size" in capsys.readouterr().err
