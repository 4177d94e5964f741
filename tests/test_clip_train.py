"""``retouch train clip``: a tiny shapes-64 CLIP for a few steps, resumed, loaded back, retrieval."""

from __future__ import annotations

import json
import math
import shutil
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import CLIPModel, CLIPProcessor

from retouch.cli import main
from retouch.train.clip import (
    RETRIEVAL_SCENES,
    RETRIEVAL_SEED,
    ClipTrainConfig,
    pixel_values,
    retrieval_accuracy,
    save_untrained_clip,
    tokens,
    train_clip,
)
from retouch.worlds import shapes64
from retouch.worlds.shapes64_data import Shapes64Source

TINY = ClipTrainConfig(steps=4, batch_size=8, warmup_steps=1, vision_hidden=32, vision_layers=1, vision_heads=2,
                       text_hidden=32, text_layers=1, text_heads=2, projection_dim=16, checkpoint_every=2,
                       log_every=2)  # fmt: skip


LEARNS = replace(TINY, steps=48, batch_size=16, checkpoint_every=48, log_every=48)  # learns something in 3 s
HELD_OUT = 32  # scenes in the fixed batch the loss is measured on, drawn with a seed no step uses


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip") / "clip"
    logs: list[str] = []
    return train_clip(TINY, folder, device="cpu", log=logs.append), logs


def test_trains_and_saves_a_loadable_clip(trained):
    result, logs = trained
    assert result.steps == 4 and result.final_loss is not None and 0 <= result.retrieval_top1 <= 1
    assert logs[0].startswith("step 2/4 loss") and "top-1 among 100 scenes" in logs[-1]
    model = CLIPModel.from_pretrained(result.folder)
    processor = CLIPProcessor.from_pretrained(result.folder)
    assert model.config.vision_config.image_size == 64 and model.config.vision_config.patch_size == 8
    assert type(processor.image_processor).__name__ == "CLIPImageProcessorPil"
    assert processor.tokenizer.tokenize("a large red circle on an orange background, pastel") == [
        "a</w>", "large</w>", "red</w>", "circle</w>", "on</w>", "an</w>", "orange</w>", "background</w>",
        ",</w>", "pastel</w>",
    ]  # fmt: skip
    # the training path's normalisation is exactly the saved processor's
    pictures = np.stack([shapes64.sample_scene(np.random.default_rng(i)).render() for i in range(3)])
    expected = processor(images=[Image.fromarray(p) for p in pictures], return_tensors="pt")["pixel_values"]
    assert torch.equal(pixel_values(processor, pictures), expected)
    assert retrieval_accuracy(model, processor) == pytest.approx(result.retrieval_top1)
    loss_log = [json.loads(line) for line in (result.folder / "work" / "log.jsonl").read_text().splitlines()]
    assert [row["step"] for row in loss_log] == [2, 4]


def held_out_loss(folder) -> float:
    """The contrastive loss of the CLIP saved in ``folder`` on one fixed batch of unseen scenes."""
    model, processor = CLIPModel.from_pretrained(folder).eval(), CLIPProcessor.from_pretrained(folder)
    pictures, captions = Shapes64Source().sample(np.random.default_rng(777), HELD_OUT)
    with torch.no_grad():
        out = model(**tokens(processor, captions), pixel_values=pixel_values(processor, pictures), return_loss=True)
    return float(out.loss)


def test_training_beats_chance(tmp_path):
    """48 steps take the loss on unseen scenes below the untrained model's (5.56, checked once)
    and below ln(32), the loss of a uniform guess; and retrieval top-1 well above chance."""
    untrained = held_out_loss(save_untrained_clip(tmp_path / "untrained", LEARNS))
    result = train_clip(LEARNS, tmp_path / "trained", device="cpu", log=lambda _: None)
    trained = held_out_loss(result.folder)
    assert untrained == pytest.approx(5.5603, abs=0.01)  # 4.2316 before "diamond" joined the vocabulary
    assert trained < math.log(HELD_OUT) < untrained, (untrained, trained)  # 2.20 when checked
    _, captions = Shapes64Source().sample(np.random.default_rng(RETRIEVAL_SEED), RETRIEVAL_SCENES)
    repeats = Counter(captions)
    chance = float(np.mean([repeats[c] / len(captions) for c in captions]))  # 0.011: a few captions repeat
    assert result.retrieval_top1 > 3 * chance, (result.retrieval_top1, chance)  # 0.12 when checked


def test_resume_matches_an_uninterrupted_run(trained, tmp_path):
    result, _ = trained
    folder = tmp_path / "clip"
    train_clip(TINY, folder, device="cpu", log=lambda _: None)
    checkpoints = folder / "work" / "checkpoints"
    (checkpoints / "latest").write_text("step-2")  # as if killed between steps 2 and 4
    shutil.rmtree(checkpoints / "step-4")
    (folder / "model.safetensors").unlink()
    logs: list[str] = []
    with pytest.raises(FileExistsError):
        train_clip(TINY, folder, device="cpu", log=logs.append)
    train_clip(TINY, folder, resume=True, device="cpu", log=logs.append)
    assert logs[0] == "resumed at step 2"
    resumed, straight = load_file(folder / "model.safetensors"), load_file(result.folder / "model.safetensors")
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


class PerfectMatcher(torch.nn.Module):
    """Embeds a picture by the caption the oracle reads from it and a caption by its words: one-hot
    vectors, so the right picture always ranks first."""

    def __init__(self, processor: CLIPProcessor) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))  # retrieval_accuracy asks for the device
        self.processor, self.index = processor, {}

    def _one_hot(self, captions: list[str]) -> torch.Tensor:
        keys = [tuple(sorted(shapes64.parse_caption(c).items())) for c in captions]
        return torch.nn.functional.one_hot(torch.tensor([self.index.setdefault(k, len(self.index)) for k in keys]),
                                           4000).float()  # fmt: skip

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        image_processor = self.processor.image_processor
        mean = torch.tensor(image_processor.image_mean)[:, None, None]
        std = torch.tensor(image_processor.image_std)[:, None, None]
        pictures = ((pixel_values * std + mean) * 255).round().byte().permute(0, 2, 3, 1).numpy()
        readings = [shapes64.read_scene(p) for p in pictures]
        return self._one_hot([shapes64.caption(r.size, r.color, r.shape, r.background, r.style) for r in readings])

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self._one_hot(self.processor.tokenizer.batch_decode(input_ids, skip_special_tokens=True))


def test_retrieval_accuracy_of_a_perfect_matcher_is_one(trained):
    processor = CLIPProcessor.from_pretrained(trained[0].folder)
    assert retrieval_accuracy(PerfectMatcher(processor), processor) == 1.0


def test_cli_train_clip(tmp_path, capsys):
    out = tmp_path / "cli-clip"
    assert main(["train", "clip", "--output", str(out), "--steps", "1", "--batch-size", "4", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["steps"] == 1 and 0 <= payload["retrieval_top1"] <= 1
    assert (out / "model.safetensors").is_file() and (out / "recipe.json").is_file()
    assert main(["train", "clip", "--output", str(out), "--steps", "1"]) == 2
    assert "--resume" in capsys.readouterr().err
