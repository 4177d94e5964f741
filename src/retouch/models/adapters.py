"""Concepts, embeddings and LoRAs applied to a loaded model, each recorded with its sha256.

Everything goes through diffusers' loaders: ``pipe.load_textual_inversion`` (the token is added to
the tokenizer, so a word-level tokenizer never maps it to an unknown token), ``pipe.load_lora_weights``
with ``set_adapters`` for the scales (diffusers, peft and kohya key layouts alike), and Custom
Diffusion's attention processors. A DreamBooth concept is a whole model: using it loads that model.

    model = load_model("shapes-64")
    model = apply_adapters(model, concepts=["runs/star"], loras=["style.safetensors:0.8"])
    generate(model, "a large red <star> on a blue background")  # the recipe lists both, with hashes

The records (``LoadedModel.adapters``) go into every recipe; ``apply_adapters(model, records=...)``
re-applies them and refuses a file that is missing or whose sha256 changed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from retouch.errors import RetouchError
from retouch.io.hashing import file_sha256, folder_sha256, safetensors_data_sha256
from retouch.models.adapter_files import SAFETENSORS_SUFFIX, check_file, read_concept, read_embeddings, read_state_dict
from retouch.models.adapter_options import check_scale, plan_adapters
from retouch.models.loading import LoadedModel, load_model

logger = logging.getLogger(__name__)
KIND_ORDER: tuple[str, ...] = ("model", "embedding", "custom_diffusion", "lora")  # a whole model first
A1111_HASH_LENGTH = 12  # AUTOMATIC1111's short hash of a LoRA or embedding (its model hash is 10)
Undo = Callable[[], None]


def apply_adapters(
    model: LoadedModel,
    concepts: Iterable[str | os.PathLike[str]] = (),
    embeddings: Iterable[str] = (),
    loras: Iterable[str] = (),
    records: Sequence[dict[str, Any]] = (),
) -> LoadedModel:
    """``model`` with concept folders, embeddings (``FILE[:TOKEN]``) and LoRAs (``FILE[:SCALE]``)
    applied, and their records (kind, path, token or name, scale, sha256) in ``.adapters``.

    The pipeline is changed in place (a DreamBooth concept loads its own model instead); use
    ``adapters_applied`` to take them off again.

    Raises:
        RetouchError: a file is missing, unreadable, would need unpickling, does not fit the model
            (embedding width, LoRA layers), a token is already in the vocabulary, or a recorded
            sha256 no longer matches.
    """
    loaded, _ = _apply(model, [*records, *plan_adapters(concepts, embeddings, loras)])
    return loaded


@contextmanager
def adapters_applied(
    model: LoadedModel,
    concepts: Iterable[str | os.PathLike[str]] = (),
    embeddings: Iterable[str] = (),
    loras: Iterable[str] = (),
    records: Sequence[dict[str, Any]] = (),
) -> Iterator[LoadedModel]:
    """``apply_adapters`` for one job: on exit the pipeline is as it was (tokens unloaded, LoRA
    adapters deleted, attention processors restored), so a batch's next job sees the plain model."""
    steps = [*records, *plan_adapters(concepts, embeddings, loras)]
    if not steps:
        yield model
        return
    loaded, undo = _apply(model, steps)
    try:
        yield loaded
    finally:
        for step in reversed(undo):
            step()
















def fingerprint(step: dict[str, Any]) -> str:
    """The sha256 a record keeps: of the file, or of every file of a DreamBooth model folder."""
    path = Path(step["path"])
    if step["kind"] == "model":
        if not path.is_dir():
            raise RetouchError(f"the DreamBooth model folder {path} is missing")
        return folder_sha256(path)
    return file_sha256(check_file(path, f"{step['kind'].replace('_', ' ')} file"))


def a1111_hash(path: Path, kind: str) -> str:
    """What AUTOMATIC1111 writes in ``Lora hashes`` / ``TI hashes``: the first 12 hex digits of the
    sha256 of a LoRA's tensor data (header left out, for .safetensors) or of an embedding file."""
    if kind == "lora" and path.suffix.lower() == SAFETENSORS_SUFFIX:
        return safetensors_data_sha256(path)[:A1111_HASH_LENGTH]
    return file_sha256(path)[:A1111_HASH_LENGTH]


def verify_records(records: Sequence[dict[str, Any]], what: str = "the recipe") -> None:
    """Refuse, before any model loads, records whose file is missing or changed since."""
    for record in records:
        check_record_fields(record, what)
        try:
            sha = fingerprint(record)
        except RetouchError as e:
            raise RetouchError(
                f"{what} uses {record['kind']} {record['path']}, which is missing or unreadable: {e}"
            ) from e
        if sha != record.get("sha256"):
            raise RetouchError(
                f"{what} uses {record['kind']} {record['path']}, which changed since: its sha256 was "
                f"{str(record.get('sha256'))[:12]}..., now {sha[:12]}...; restore the file or generate anew"
            )


def check_record_fields(record: Any, what: str) -> None:
    """An adapter record names a known kind, a path and (when recorded) a sha256 string."""
    if not isinstance(record, dict) or record.get("kind") not in KIND_ORDER or not isinstance(record.get("path"), str):
        raise RetouchError(
            f"{what}: bad adapter record {record!r}; each needs a kind ({', '.join(KIND_ORDER)}) and a path"
        )
    if "sha256" in record and not isinstance(record["sha256"], str):
        raise RetouchError(f"{what}: the adapter record of {record['path']} has a sha256 that is not a string")
    if record["kind"] == "lora":
        check_scale(record.get("scale", 1.0), f"{what}: {record['path']}")


def _apply(model: LoadedModel, steps: list[dict[str, Any]]) -> tuple[LoadedModel, list[Undo]]:
    """Load each step, models first; returns the model with its records and how to undo each load."""
    for step in steps:
        check_record_fields(step, "adapter")
    steps = sorted(steps, key=lambda step: KIND_ORDER.index(step["kind"]))
    if sum(step["kind"] == "model" for step in steps) > 1:
        raise RetouchError("two DreamBooth concepts cannot be used together: each is a whole model")
    for folder in sorted({step["concept"] for step in steps if "concept" in step and step["kind"] != "model"}):
        warn_if_other_base(model, folder)
    loaded, undo, records = model, [], list(model.adapters)
    for step in steps:
        sha = fingerprint(step)
        if step.get("sha256") not in (None, sha):
            raise RetouchError(f"{step['kind']} {step['path']} changed since it was recorded (sha256 differs)")
        path = Path(step["path"])
        record = {**step, "path": str(path.resolve()), "sha256": sha}
        if step["kind"] == "model":
            loaded = _use_model(loaded, path)
        elif step["kind"] == "embedding":
            record["tokens"] = _load_embeddings(loaded, path, step.get("tokens"), undo)
            record["a1111_hash"] = sha[:A1111_HASH_LENGTH]
        elif step["kind"] == "custom_diffusion":
            _load_custom_diffusion(loaded, path, undo)
        else:
            record["a1111_hash"] = a1111_hash(path, "lora")
            record["scale"] = check_scale(step.get("scale", 1.0), str(path))
            _load_lora(loaded, path, f"lora{sum(r['kind'] == 'lora' for r in records)}", undo)
        records.append(record)
    if any(step["kind"] == "lora" for step in steps):
        _set_lora_scales(loaded, records, undo)
    return replace(loaded, adapters=records), undo


def warn_if_other_base(model: LoadedModel, folder: str) -> None:
    """Log a warning when a concept was trained on another model than ``model`` (it may still fit:
    a LoRA of one SD 1.5 model on another; a misfit shows up as an error when it loads)."""
    try:
        base = read_concept(folder).get("base_model")
    except RetouchError:  # a recipe's concept folder may have lost its concept.json: the files decide
        return
    if isinstance(base, str) and base not in (model.name, Path(model.name).name):
        logger.warning("the concept %s was trained on %s, not on %s; it may not fit", folder, base, model.name)


def _use_model(model: LoadedModel, path: Path) -> LoadedModel:
    """A DreamBooth concept's own model, loaded like the base (same device and dtype)."""
    if model.name == str(path.resolve()):
        return model  # already loaded (a replay names it as its model)
    if model.adapters:
        raise RetouchError("a DreamBooth concept is a whole model: give it before any other adapter")
    return load_model(str(path), model.device, model.dtype)


def _load_embeddings(model: LoadedModel, path: Path, tokens: list[str] | None, undo: list[Undo]) -> list[str]:
    """Add each token of an embedding file to the tokenizer and text encoder; returns the tokens."""
    pipe = model.pipe
    found = read_embeddings(path, tokens[0] if tokens and len(tokens) == 1 else None)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    vocabulary = pipe.tokenizer.get_vocab()
    for token, vectors in found.items():
        if vectors.shape[1] != width:
            raise RetouchError(
                f"{path}: the embedding of {token!r} is {vectors.shape[1]} wide but this model's text encoder "
                f"takes {width}; it was trained for another model"
            )
        if {token, f"{token}</w>", f"{token}_1"} & vocabulary.keys():  # CLIP keeps whole words as "word</w>"
            raise RetouchError(
                f"{path}: the token {token!r} is already in the tokenizer's vocabulary (a word the model "
                "knows, or an embedding loaded twice); pick another: --embedding FILE:<new-token>"
            )
    added = [t if i == 0 else f"{t}_{i}" for t, vectors in found.items() for i in range(len(vectors))]
    pipe.load_textual_inversion(list(found.values()), token=list(found))
    undo.append(lambda: pipe.unload_textual_inversion(added))
    return list(found)


def _load_custom_diffusion(model: LoadedModel, path: Path, undo: list[Undo]) -> None:
    """Custom Diffusion's K/V weights (``unet.save_attn_procs``' layout) as attention processors.

    Written out rather than ``unet.load_attn_procs``, which in diffusers 0.42 sets nothing unless
    given ``_pipeline`` and fails on a ``.safetensors`` file (it has no entries for self-attention).
    As diffusers does, every attention layer without weights gets a plain Custom Diffusion processor.
    """
    from diffusers.models.attention_processor import CustomDiffusionAttnProcessor

    unet = model.pipe.unet
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in read_state_dict(path, "Custom Diffusion file").items():
        layer, _, weight = key.partition(".processor.")
        if "custom_diffusion" not in weight or not isinstance(value, torch.Tensor):
            raise RetouchError(f"{path}: {key!r} is not a Custom Diffusion weight; is it a LoRA? use --lora")
        groups.setdefault(f"{layer}.processor", {})[weight] = value
    saved = dict(unet.attn_processors)
    unknown = sorted(set(groups) - set(saved))
    if unknown:
        raise RetouchError(
            f"{path}: this model has no attention layer {unknown[0]!r}; it was trained for another model"
        )
    processors: dict[str, Any] = {
        name: CustomDiffusionAttnProcessor(train_kv=False, train_q_out=False) for name in saved
    }
    for name, weights in groups.items():
        key_weight = weights.get("to_k_custom_diffusion.weight")  # (hidden, cross-attention dim)
        if key_weight is None:
            raise RetouchError(f"{path}: {name} has no to_k_custom_diffusion weight")
        processor = CustomDiffusionAttnProcessor(
            train_kv=True,
            train_q_out="to_q_custom_diffusion.weight" in weights,
            hidden_size=key_weight.shape[0],
            cross_attention_dim=key_weight.shape[1],
        )
        try:
            processor.load_state_dict(weights)
        except RuntimeError as e:
            raise RetouchError(f"{path}: the weights of {name} do not fit ({e})") from e
        processors[name] = processor.to(device=unet.device, dtype=unet.dtype)
    _check_widths(unet, groups, path)
    unet.set_attn_processor(processors)
    undo.append(lambda: unet.set_attn_processor(saved))


def _check_widths(unet: Any, groups: dict[str, dict[str, torch.Tensor]], path: Path) -> None:
    """Each K/V projection must map the text encoder's width to its layer's width."""
    cross = unet.config.cross_attention_dim
    for name, weights in groups.items():
        layer = unet.get_submodule(name.removesuffix(".processor"))
        want = (layer.to_k.out_features, cross)
        if tuple(weights["to_k_custom_diffusion.weight"].shape) != want:
            raise RetouchError(
                f"{path}: {name} projects {tuple(weights['to_k_custom_diffusion.weight'].shape)} but this "
                f"model's layer takes {want}; it was trained for another model"
            )


def _load_lora(model: LoadedModel, path: Path, adapter_name: str, undo: list[Undo]) -> None:
    """One LoRA file (diffusers, peft or kohya keys) as a named peft adapter."""
    pipe = model.pipe
    state = read_state_dict(path, "LoRA file")
    try:
        pipe.load_lora_weights(state, adapter_name=adapter_name)
    except (ValueError, RuntimeError, KeyError, TypeError) as e:
        raise RetouchError(f"{path} does not fit this model as a LoRA ({type(e).__name__}: {e})") from e
    if not any(adapter_name in names for names in pipe.get_list_adapters().values()):
        raise RetouchError(f"{path}: none of its keys names a layer of this model; it is not a LoRA for it")
    undo.append(lambda: pipe.delete_adapters([adapter_name]))


def _set_lora_scales(model: LoadedModel, records: list[dict[str, Any]], undo: list[Undo]) -> None:
    """Activate every LoRA of ``records`` at its scale (``set_adapters``); the undo, run last,
    re-activates the ones ``model`` had before."""
    loras = [(f"lora{i}", record["scale"]) for i, record in enumerate(r for r in records if r["kind"] == "lora")]
    model.pipe.set_adapters([name for name, _ in loras], [scale for _, scale in loras])
    earlier = loras[: sum(record["kind"] == "lora" for record in model.adapters)]
    if earlier:
        undo.insert(0, lambda: model.pipe.set_adapters([n for n, _ in earlier], [s for _, s in earlier]))
