"""AUTOMATIC1111 prompt weighting: the parser, the encoding, and generate's use of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from retouch.core.generate import generate
from retouch.core.weighting import (
    encode_runs,
    encode_weighted_prompt,
    has_weighting,
    parse_prompt_attention,
    prompt_text,
)
from retouch.models.tiny import tiny_pipeline

W = 1.1
CASES = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", W), (" word", 1.0)]),
    ("((nested))", [("nested", W * W)]),
    ("(((deep)))", [("deep", W * W * W)]),
    ("(word:1.3) rest", [("word", 1.3), (" rest", 1.0)]),
    ("(word: 0.5 )", [("word", 0.5)]),
    ("(word:.5)", [("word", 0.5)]),
    ("(word:-1)", [("word", -1.0)]),
    ("[less]", [("less", 1 / W)]),
    ("[[less]]", [("less", 1 / W / W)]),
    ("[(even)]", [("even", W / W)]),
    ("((a:1.5) b)", [("a", 1.5 * W), (" b", W)]),
    ("(unbalanced", [("unbalanced", W)]),
    ("[unbalanced", [("unbalanced", 1 / W)]),
    ("closed) too]", [("closed) too]", 1.0)]),
    (r"\(literal\]", [("(literal]", 1.0)]),
    (r"a \\ b", [("a \\ b", 1.0)]),
    (r"escaped \(not:1.5\) weighted", [("escaped (not:1.5) weighted", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", W)]),
    ("a: b", [("a: b", 1.0)]),
    ("", [("", 1.0)]),
    (
        "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
        [("a ", 1.0), ("house", 1.3 * W * W), (" ", W), ("on", 1.0), (" a ", W), ("hill", 0.5 * W),
         (", sun, ", W), ("sky", W**4), (".", W)],
    ),  # AUTOMATIC1111's own doctest
]  # fmt: skip


@pytest.mark.parametrize(("prompt", "expected"), CASES)
def test_parse_prompt_attention(prompt: str, expected: list[tuple[str, float]]) -> None:
    parsed = parse_prompt_attention(prompt)
    assert [text for text, _ in parsed] == [text for text, _ in expected]
    assert [weight for _, weight in parsed] == pytest.approx([weight for _, weight in expected])


def test_has_weighting_and_prompt_text() -> None:
    assert not has_weighting("a red circle on a blue background, pastel")
    assert not has_weighting("")
    assert has_weighting("a (red) circle")
    assert has_weighting(r"a \(red circle")
    assert prompt_text("a ((red:1.2)) circle [on] a blue background") == "a red circle on a blue background"


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def biased_pipe():
    """The tiny encoder's final LayerNorm has no bias, so its outputs have no mean to restore;
    a bias gives them one, as a trained CLIP encoder's have."""
    pipe = tiny_pipeline()
    norm = next(m for name, m in pipe.text_encoder.named_modules() if name.endswith("final_layer_norm"))
    with torch.no_grad():
        norm.bias.fill_(0.3)
    return pipe


def test_plain_prompt_is_the_pipelines_encoding(pipe) -> None:
    prompt = "a large red circle on a blue background"
    expected, _ = pipe.encode_prompt(prompt, pipe.device, 1, False)
    assert torch.equal(encode_weighted_prompt(pipe, prompt), expected)
    # The weighted path itself lays tokens out as the tokenizer does: weight 1 changes nothing.
    assert torch.equal(encode_runs(pipe, [(prompt, 1.0)]), expected)
    split = [("a large ", 1.0), ("red circle on a blue background", 1.0)]
    assert torch.equal(encode_runs(pipe, split), expected)


def test_weights_scale_tokens_and_the_mean_is_restored(biased_pipe) -> None:
    pipe = biased_pipe
    plain, _ = pipe.encode_prompt("a red circle", pipe.device, 1, False)  # (1, 77, 32)
    weighted = encode_weighted_prompt(pipe, "a (red:1.5) circle")
    assert weighted.shape == plain.shape
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-5)
    ratio = (weighted / plain)[0]  # (tokens, dim): token 2 ("red") is 1.5 c, every other is c
    c = ratio[0].mean().item()
    assert c != pytest.approx(1.0, abs=1e-4)
    torch.testing.assert_close(ratio[[0, 1, 3, 40]], torch.full((4, 32), c), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ratio[2], torch.full((32,), 1.5 * c), rtol=1e-4, atol=1e-4)


def test_no_mean_to_restore_keeps_the_plain_weights(pipe) -> None:
    plain, _ = pipe.encode_prompt("a red circle", pipe.device, 1, False)
    weighted = encode_weighted_prompt(pipe, "a (red:1.5) circle")
    assert torch.isfinite(weighted).all()
    torch.testing.assert_close(weighted[0, 2], 1.5 * plain[0, 2])
    torch.testing.assert_close(weighted[0, 3], plain[0, 3])


def test_generate_uses_the_weights(pipe) -> None:
    kwargs = {"seed": 3, "steps": 2, "scheduler": "ddim"}
    plain = np.asarray(generate(pipe, "a red circle", **kwargs).images[0])
    same = np.asarray(generate(pipe, "a (red:1) circle", **kwargs).images[0])
    weighted = generate(pipe, "a (red:1.5) circle", negative_prompt="[blue]", **kwargs)
    assert np.array_equal(plain, same)
    assert not np.array_equal(plain, np.asarray(weighted.images[0]))
    assert weighted.recipes[0]["prompt"] == "a (red:1.5) circle"
