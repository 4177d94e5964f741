"""Reading the files that teach a model a concept, without ever unpickling code.

``.safetensors`` files are read directly; ``.pt``/``.bin``/``.ckpt`` only through
``torch.load(weights_only=True)``. Embeddings come in three layouts, all read to diffusers' own
``{token: (n_vectors, dim)}``:

    diffusers   {"<star>": tensor}                       (``learned_embeds.safetensors``)
    A1111       {"emb_params": tensor}                   (an A1111 ``.safetensors`` embedding)
    A1111 .pt   {"string_to_param": {"*": tensor}, "name": "star", ...}

A concept folder (``retouch train ...``) holds ``concept.json`` naming its method, tokens and files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from retouch.errors import RetouchError
from retouch.models.loading import torch_load_weights_only

SAFETENSORS_SUFFIX = ".safetensors"
PICKLE_SUFFIXES: tuple[str, ...] = (".pt", ".bin", ".ckpt", ".pth")
CONCEPT_FILE = "concept.json"
CONCEPT_FORMAT = 1
CONCEPT_METHODS: tuple[str, ...] = ("textual-inversion", "dreambooth", "lora", "custom-diffusion")
# The roles a concept's files play that retouch applies, in the order it applies them: a whole model
# first (it replaces the pipeline), then tokens, then layers. "embeddings_a1111" and "lora_kohya"
# are copies of "embeddings" and "lora" for other tools.
APPLIED_ROLES: tuple[str, ...] = ("model", "embeddings", "custom_diffusion", "lora")


def check_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` resolved, or a RetouchError when it is missing, a folder or empty."""
    path = Path(path).expanduser()
    if not path.exists():
        raise RetouchError(f"{what} not found: {path}")
    if not path.is_file():
        raise RetouchError(f"{what} {path} is a folder; pass the weights file inside it")
    if path.stat().st_size == 0:
        raise RetouchError(f"{what} {path} is empty (0 bytes)")
    return path.resolve()


def read_state_dict(path: str | os.PathLike[str], what: str = "weights file") -> dict[str, Any]:
    """The tensors of a ``.safetensors`` file, or the contents of a ``.pt``/``.bin`` read with
    ``weights_only=True`` (a pickle holding code is refused)."""
    path = check_file(path, what)
    suffix = path.suffix.lower()
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as e:  # safetensors raises its own Rust error type
            raise RetouchError(f"{path} is not a valid .safetensors file ({e}); the file may be corrupt") from e
    if suffix in PICKLE_SUFFIXES:
        data = torch_load_weights_only(path)
        if not isinstance(data, dict):
            raise RetouchError(f"{path} holds a {type(data).__name__}, not a dict of tensors")
        return data
    raise RetouchError(f"unsupported {what} {path.name!r}: use .safetensors (or .pt/.bin)")


def read_embeddings(path: str | os.PathLike[str], token: str | None = None) -> dict[str, torch.Tensor]:
    """``{token: (n_vectors, dim)}`` from a diffusers, A1111 ``.safetensors`` or A1111 ``.pt`` embedding.

    ``token`` renames a file's single token (A1111 files name none: the default is the file's stem,
    as A1111 does); a file of several tokens keeps its own names.
    """
    data = read_state_dict(path, "embedding file")
    path = Path(path)
    if "string_to_param" in data:  # A1111 .pt
        params = data["string_to_param"]
        if not isinstance(params, dict) or "*" not in params:
            raise RetouchError(f"{path}: 'string_to_param' has no '*' entry; not an A1111 embedding")
        found = {str(data.get("name") or path.stem): params["*"]}
    elif "emb_params" in data:  # A1111 .safetensors
        found = {path.stem: data["emb_params"]}
    else:
        found = dict(data)
    if token is not None:
        if len(found) != 1:
            raise RetouchError(
                f"{path} holds {len(found)} tokens ({', '.join(found)}); it cannot be renamed to {token!r}. "
                "Leave out ':TOKEN'"
            )
        found = {token: next(iter(found.values()))}
    embeddings = {}
    for name, tensor in found.items():
        if not isinstance(tensor, torch.Tensor) or tensor.ndim not in (1, 2) or not tensor.is_floating_point():
            raise RetouchError(f"{path}: the embedding of {name!r} is not a float tensor of shape (vectors, dim)")
        embeddings[name] = tensor.reshape(-1, tensor.shape[-1]).float()  # (n_vectors, dim)
    if not embeddings:
        raise RetouchError(f"{path} holds no embedding")
    return embeddings


def read_concept(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A concept folder's ``concept.json``, checked: a known method, tokens and the files it names."""
    folder = Path(folder).expanduser()
    path = folder / CONCEPT_FILE
    if not path.is_file():
        raise RetouchError(
            f"{folder} is not a concept folder (no {CONCEPT_FILE}); pass the --output folder of a "
            "'retouch train' run, or use --embedding/--lora for single files"
        )
    try:
        concept = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RetouchError(f"{path} is not valid JSON ({e})") from e
    if not isinstance(concept, dict) or concept.get("method") not in CONCEPT_METHODS:
        raise RetouchError(f"{path}: 'method' must be one of {', '.join(CONCEPT_METHODS)}")
    if concept.get("format", CONCEPT_FORMAT) != CONCEPT_FORMAT:
        raise RetouchError(f"{path} has format {concept.get('format')!r}; this retouch reads format {CONCEPT_FORMAT}")
    files = concept.get("files")
    if not isinstance(files, dict) or not any(role in files for role in APPLIED_ROLES):
        raise RetouchError(f"{path}: 'files' names none of the roles {', '.join(APPLIED_ROLES)}")
    for role in APPLIED_ROLES:
        if role in files and not (folder / str(files[role])).exists():
            raise RetouchError(f"{path} names {role} {files[role]!r}, which is missing from {folder}")
    return concept
