"""``retouch evaluate`` over folders, and its SDEdit strength sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from retouch.cli import main
from retouch.errors import RetouchError
from retouch.io.png import save_png
from retouch.metrics.evaluate import Scorers, evaluate_images, evaluate_imagic_report, load_scorers
from retouch.metrics.masked import masked_metrics
from retouch.train.clip import ClipTrainConfig, save_untrained_clip
from retouch.worlds import shapes64

TINY_CLIP = ClipTrainConfig(
    vision_hidden=32, vision_layers=1, vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, projection_dim=16
)


class _Features(torch.nn.Module):  # stands in for the TorchScript Inception: same call signature
    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = images.float() / 255.0
        return torch.cat([x.mean(dim=(2, 3)), x.std(dim=(2, 3))], dim=1)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Eight shapes-64 edits: references (sources), outputs (each target's render with noise outside
    the edit, the last one left unedited), ground-truth masks and captions."""
    root = tmp_path_factory.mktemp("evaluate")
    dirs = {name: root / name for name in ("images", "references", "masks", "recipes")}
    for folder in dirs.values():
        folder.mkdir()
    rng = np.random.default_rng(0)
    captions = []
    for i in range(8):
        pair = shapes64.sample_edit(rng, ("color", "background", "shape")[i % 3])
        source, target = pair.source.render(), pair.target.render()
        noisy = np.clip(target.astype(int) + rng.integers(-6, 7, target.shape) * ~pair.mask[..., None], 0, 255)
        output = source if i == 7 else noisy.astype(np.uint8)
        Image.fromarray(output).save(dirs["images"] / f"{i}.png")
        Image.fromarray(source).save(dirs["references"] / f"{i}.png")
        Image.fromarray(pair.mask.astype(np.uint8) * 255).save(dirs["masks"] / f"{i}.png")
        recipe = dict(task="edit", prompt=pair.target_caption, target=pair.target_caption, steps=1)
        recipe.update(scheduler="ddim", guidance_scale=7.5, seed=0, width=64, height=64, model="x")
        save_png(Image.fromarray(output), dirs["recipes"] / f"{i}.png", recipe)
        captions.append({"file_name": f"{i}.png", "text": pair.target_caption})
    (root / "captions.jsonl").write_text("\n".join(json.dumps(c) for c in captions) + "\n")
    dirs["captions"] = root / "captions.jsonl"
    dirs["clip"] = save_untrained_clip(root / "clip", TINY_CLIP)
    torch.jit.script(_Features()).save(str(root / "inception.pt"))
    dirs["inception"] = root / "inception.pt"
    return dirs


def test_folder_metrics(folders):
    scorers = load_scorers(folders["clip"], None, folders["inception"], want=("clip", "inception"))
    result = evaluate_images(folders["images"], folders["references"], folders["masks"], folders["captions"], scorers)
    assert len(result.rows) == 8
    first = result.rows[0]
    output = np.asarray(Image.open(folders["images"] / "0.png").convert("RGB"))
    reference = np.asarray(Image.open(folders["references"] / "0.png").convert("RGB"))
    mask = np.asarray(Image.open(folders["masks"] / "0.png")) > 127
    expected = masked_metrics(reference, output, mask)
    assert first["psnr_inside"] == pytest.approx(expected["inside"]["psnr"])
    assert first["ssim_outside"] == pytest.approx(expected["outside"]["ssim"])
    assert 30 < first["psnr_outside"] < 45  # +-6 grey levels of noise outside the edit
    assert result.rows[7]["psnr"] == math.inf  # left unedited: identical to its reference
    assert all(-1 <= row["clip_score"] <= 1 for row in result.rows)
    summary = result.summary
    assert summary["oracle_all"] == pytest.approx(7 / 8) and summary["oracle_n"] == 8  # the unedited one misses
    assert summary["fid"] > 0 and np.isfinite(summary["kid"])
    assert summary["n"] == 8 and "mean_psnr_outside" in summary


def test_missing_networks_are_skipped_with_a_message(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RETOUCH_METRICS_DIR", str(tmp_path / "metrics"))
    out = tmp_path / "report"
    inputs = ["--images", str(folders["recipes"]), "--references", str(folders["references"])]
    inputs += ["--masks", str(folders["masks"]), "--clip", str(folders["clip"])]
    assert main(["evaluate", *inputs, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"LPIPS skipped: LPIPS needs the AlexNet LPIPS network as a local file. Put it at {tmp_path}" in printed
    assert "inception-2015-12-05.pt" in printed and "--inception PATH" in printed
    table = json.loads((out / "metrics.json").read_text())
    assert len(table["rows"]) == 8 and table["rows"][0]["caption"].endswith("background")  # from the recipes
    assert all("psnr_outside" in row and "clip_score" in row and "lpips" not in row for row in table["rows"])
    assert "fid" not in table["summary"] and table["summary"]["oracle_all"] == pytest.approx(7 / 8)
    assert (out / "metrics.md").read_text().startswith("## Summary")
    assert (out / "metrics.csv").read_text().splitlines()[0].startswith("file,caption,psnr,ssim")


def test_no_clip_model_still_scores_the_rest(folders, monkeypatch, tmp_path):
    monkeypatch.setattr("retouch.metrics.clip_score.bundled_clip_path", lambda: tmp_path / "no-clip")
    scorers = load_scorers(None, None, None, want=("clip",))
    assert scorers.clip is None and "--clip FOLDER" in scorers.notes[0]
    result = evaluate_images(folders["images"], folders["references"], None, folders["captions"], scorers)
    assert "clip_score" not in result.rows[0] and "psnr" in result.rows[0]
    assert any("CLIP score skipped" in note for note in result.notes)
    assert evaluate_images(folders["images"], scorers=Scorers()).rows[0]["caption"] is None  # no recipes there


def test_sdedit_sweep(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RETOUCH_METRICS_DIR", str(tmp_path / "metrics"))  # no LPIPS: PSNR and SSIM only
    pixels = np.zeros((32, 32, 3), dtype=np.uint8)
    pixels[8:24, 8:24] = (220, 40, 40)
    Image.fromarray(pixels).save(tmp_path / "in.png")
    out = tmp_path / "sweep"
    edit = ["--image", str(tmp_path / "in.png"), "--source", "a red square", "--target", "a blue square"]
    sweep = ["--strengths", "0.5,1.0", "--steps", "2", "--model", str(tiny_model_dir), "--device", "cpu"]
    assert main(["evaluate", "--sdedit-sweep", *edit, *sweep, "--out", str(out), "--quiet"]) == 0
    rows = json.loads((out / "sdedit_sweep.json").read_text())["rows"]
    assert [row["strength"] for row in rows] == [0.5, 1.0]
    assert all(row["psnr"] > 0 and -1 <= row["ssim"] <= 1 and row["1-lpips"] is None for row in rows)
    assert (out / "sdedit_strength.png").stat().st_size > 10_000
    assert (out / "sdedit_0.50.png").is_file() and (out / "sdedit_1.00.png").is_file()


def test_an_imagic_report_evaluation_saves_tables_and_plot(tmp_path):
    scores = ((0.0, 0.1), (0.5, 0.4), (0.5, 0.6), (1.0, 0.9))
    sweep = [{"eta": eta, "judge_score": score, "psnr": 20.0 + eta, "file": None} for eta, score in scores]
    report = {"task": "imagic", "sweep": sweep, "eta": 0.5, "target": "a blue square", "judge": "oracle"}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    evaluation = evaluate_imagic_report(path, Scorers(notes=["LPIPS skipped: no weights"]))
    assert [row["eta"] for row in evaluation.rows] == [0.0, 0.5, 1.0]
    assert evaluation.rows[1]["seeds"] == 2 and evaluation.rows[1]["judge_score"] == pytest.approx(0.5)
    assert evaluation.headline == {"eta_chosen": 0.5, "etas": 3}
    files = evaluation.save(tmp_path / "out")
    names = {kind: p.name for kind, p in files.items()}
    assert names == {f: f"imagic_sweep.{f}" for f in ("md", "csv", "json")} | {"plot": "imagic_eta.png"}
    table = json.loads(files["json"].read_text())
    assert table["summary"] == {"eta_chosen": 0.5} and table["notes"] == ["LPIPS skipped: no weights"]
    path.write_text(json.dumps({"task": "edit"}))
    with pytest.raises(RetouchError, match="not an Imagic report"):
        evaluate_imagic_report(path, Scorers())
