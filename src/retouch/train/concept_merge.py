"""Merge separately trained Custom Diffusion concepts into one (Kumari et al. 2023, sec. 3.2).

For every cross-attention key/value projection, the merged ``W`` solves the constrained least
squares problem of the paper's eq. 4:

    min_W || C_reg W^T - C_reg W0^T ||_F   subject to   C W^T = V,

where ``W0`` is the base model's weight, ``C_reg`` (r, d) text features of regularization captions
(the concepts' captions with each token replaced by its class word, and the class images'
prompts), ``C`` (m, d) the text features at each concept's token in its captions and ``V`` (m, out)
those features through the concept's own trained weight. The paper flattens every word of the
captions into ``C``; the authors' code (``composenW.py``) constrains short prompts around the token
(``<new1> cat``, ``photo of a <new1> cat``). Here only the token's own rows are constrained: the
other words of a caption are the words of regular captions too, and constraining them to each
concept's trained weight pins nearly equal rows to different values, which wrecks the merge on a
small text encoder (docs/benchmarks.md).

Closed form (eq. 5): ``W = W0 + (V^T - W0 C^T) (C M^-1 C^T)^+ C M^-1`` with ``M = C_reg^T C_reg``;
the pseudo-inverse makes it the least-squares fit when the constraints outnumber the dimensions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from retouch.errors import RetouchError
from retouch.io.atomic import atomic_write_json, check_writable
from retouch.models.loading import LoadedModel, load_model
from retouch.train.concept_files import EMBEDDINGS, save_embeddings
from retouch.train.custom_diffusion import WEIGHTS
from retouch.train.finetune import add_token, weights_sha256

RIDGE = 1e-4  # relative ridge on M, which has no full rank with few regularization captions


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "concept.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RetouchError(f"{folder} is not a trained concept (cannot read {path.name}: {err})") from err
    if manifest.get("method") != "custom-diffusion" or "custom_diffusion" not in manifest.get("files", {}):
        raise RetouchError(f"{folder} holds a {manifest.get('method')} concept; only custom-diffusion ones merge")
    return manifest


@torch.no_grad()
def caption_features(model: LoadedModel, captions: Sequence[str], tokens: Sequence[str] = ()) -> torch.Tensor:
    """(rows, dim) float64: the text encoder's output at every position up to each caption's end
    token; with ``tokens``, only at the positions of those tokens (each of their vectors)."""
    from retouch.train.finetune import encode_captions

    pipe = model.pipe
    texts = [pipe.maybe_convert_prompt(c, pipe.tokenizer) for c in captions]
    ids = pipe.tokenizer(texts, padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    hidden = encode_captions(pipe, captions).double().cpu()  # (n, tokens, dim)
    if tokens:
        wanted = [i for t in tokens for i in pipe.tokenizer(pipe.maybe_convert_prompt(t, pipe.tokenizer),
                                                            add_special_tokens=False).input_ids]
        return hidden[torch.isin(ids, torch.tensor(wanted))]
    ends = [int(torch.cat([(row == pipe.tokenizer.eos_token_id).nonzero()[:, 0], torch.tensor([len(row) - 1])])[0])
            for row in ids]  # the first end token (padding may be end tokens too)
    return torch.cat([hidden[i, : end + 1] for i, end in enumerate(ends)])


def merged_weight(w0: torch.Tensor, c: torch.Tensor, v: torch.Tensor, c_reg: torch.Tensor) -> torch.Tensor:
    """Eq. 5: ``w0`` (out, d), ``c`` (m, d), ``v`` (m, out), ``c_reg`` (r, d) -> (out, d)."""
    m = c_reg.T @ c_reg
    m = m + RIDGE * m.diagonal().mean() * torch.eye(len(m), dtype=m.dtype)
    c_minv = torch.linalg.solve(m, c.T).T  # (m, d): C M^-1 (M symmetric)
    d = torch.linalg.pinv(c_minv @ c.T) @ c_minv  # (m, d)
    return w0 + (v.T - w0 @ c.T) @ d


def merge_concepts(
    folders: Sequence[str | os.PathLike[str]], output: str | os.PathLike[str], model: LoadedModel | None = None
) -> dict[str, Any]:
    """Merge the Custom Diffusion concepts in ``folders`` (trained on one base model) into a new
    concept folder ``output``; returns its ``concept.json``. ``model`` defaults to the base model
    the concepts record, which must be the one they were trained on (same weights hash)."""
    paths = [Path(f) for f in folders]
    if len(paths) < 2:
        raise RetouchError("merge needs at least two concept folders")
    manifests = [read_manifest(p) for p in paths]
    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise RetouchError(f"{out} is not empty; pick a new --output")
    if len({m["base_model_sha256"] for m in manifests}) != 1:
        raise RetouchError("the concepts were trained on different base models; only one model's concepts merge")
    tokens = [t for m in manifests for t in m["tokens"]]
    if len(set(tokens)) != len(tokens):
        raise RetouchError(f"the concepts share a token ({tokens}); retrain one with another --token")
    model = model or load_model(manifests[0]["base_model"], device="cpu")
    if weights_sha256(model.pipe) != manifests[0]["base_model_sha256"]:
        raise RetouchError(f"{manifests[0]['base_model']} is not the model the concepts were trained on (its hash"
                           " changed); pass the original with --model")
    for path, manifest in zip(paths, manifests, strict=True):
        for token, vectors in load_file(path / manifest["files"].get("embeddings", EMBEDDINGS)).items():
            add_token(model.pipe, token, vectors)
    merged = _merge_weights(model, paths, manifests)
    check_writable(out)
    save_file(merged, out / WEIGHTS, metadata={"format": "pt"})
    files = {"custom_diffusion": WEIGHTS, **save_embeddings(model.pipe, tokens, out)}
    manifest = {
        **{k: manifests[0][k] for k in ("format", "method", "base_model", "base_model_sha256")},
        "tokens": tokens,
        "class_word": manifests[0]["class_word"],
        "settings": {"merged_from": [str(p.resolve()) for p in paths], "ridge": RIDGE, "constraints": "token rows"},
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": {},
        "files": files,
        "concepts": [c for m in manifests for c in m["concepts"]],
    }
    atomic_write_json(out / "concept.json", manifest)
    return manifest


def _merge_weights(model: LoadedModel, paths: list[Path], manifests: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Every trained key/value weight merged by ``merged_weight``."""
    concepts = [c for m in manifests for c in m["concepts"]]
    feats = [caption_features(model, [t for c in m["concepts"] for t in c["captions"]], m["tokens"])
             for m in manifests]  # the constraints: each concept's token rows (see the module's docstring)
    # The captions whose outputs the merge keeps as the base model's: the training captions with the
    # class word for the token, and the class images' prompts when prior preservation had some (the
    # paper uses 200,000 LAION captions; with only a handful, M is far from full rank and the merged
    # weights stray on every other caption).
    reg_captions = [_with_class_word(t, c["token"], c["class_word"]) for c in concepts for t in c["captions"]]
    reg_captions += [p for m in manifests for p in m.get("settings", {}).get("class_prompts") or []]
    c_reg = caption_features(model, reg_captions)
    states = [load_file(p / m["files"]["custom_diffusion"]) for p, m in zip(paths, manifests, strict=True)]
    c = torch.cat(feats)
    merged = {}
    for key in states[0]:
        layer = model.pipe.unet.get_submodule(key.split(".processor.")[0])
        w0 = (layer.to_k if "to_k_custom" in key else layer.to_v).weight.detach().double().cpu()
        v = torch.cat([f @ s[key].double().T for f, s in zip(feats, states, strict=True)])  # (m, out)
        merged[key] = merged_weight(w0, c, v, c_reg).to(states[0][key].dtype).contiguous()
    return merged


def _with_class_word(caption: str, token: str, class_word: str | None) -> str:
    """``a <star> cross`` -> ``a cross``; ``a red <star> on ...`` -> ``a red cross on ...``."""
    if class_word:
        caption = caption.replace(f"{token} {class_word}", class_word)
    return " ".join(caption.replace(token, class_word or "").split())
