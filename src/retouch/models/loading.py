"""One loader behind every ``--model``: bundled name, diffusers folder, single file or hub id."""

from __future__ import annotations

import json
import os
import pickle
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import torch
from diffusers import StableDiffusionPipeline

from retouch.errors import RetouchError

DEFAULT_MODEL = "shapes-64"
DEFAULT_INSTRUCT_MODEL = "shapes-64-instruct"  # ``instruct``'s default: shapes-64 fine-tuned on instructions
BUNDLED_MODELS: tuple[str, ...] = ("shapes-64", DEFAULT_INSTRUCT_MODEL)
SINGLE_FILE_SUFFIXES: tuple[str, ...] = (".safetensors",)
PICKLE_SUFFIXES: tuple[str, ...] = (".ckpt", ".bin", ".pt", ".pth")
DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
HUB_TIMEOUT_S = 3.0
FALLBACK_GUIDANCE_SCALE = 7.5  # Stable Diffusion's usual scale, for models that recommend none
MODEL_DEFAULTS_FILE = "retouch.json"  # beside model_index.json: what the model's trainer recommends
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

ModelSource = Literal["bundled", "folder", "single-file", "hub", "pipeline"]  # pipeline: passed in


@dataclass
class LoadedModel:
    """A pipeline plus what a recipe needs to load it again."""

    pipe: StableDiffusionPipeline
    name: str  # what recipes record: a bundled name, an absolute path or a hub id
    source: ModelSource
    config: str | None = None  # the diffusers config folder a single-file checkpoint was read with
    defaults: dict[str, Any] = field(default_factory=dict)  # the model's retouch.json, if it has one
    # the concepts, embeddings and LoRAs applied (``retouch.models.adapters``), one record each
    adapters: list[dict[str, Any]] = field(default_factory=list)
    # pipelines built over ``pipe``'s components by the methods (``retouch.edit.instruct``), kept for
    # their next call: key -> (the components they were built from, the pipeline)
    views: dict[Any, tuple[tuple[Any, ...], Any]] = field(default_factory=dict, repr=False, compare=False)

    def guidance_scale(self, value: float | None = None) -> float:
        """``value`` when given, else the scale the model recommends, else 7.5."""
        if value is not None:
            return float(value)
        return float(self.defaults.get("guidance_scale", FALLBACK_GUIDANCE_SCALE))

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.unet.dtype

    def recipe_fields(self) -> dict[str, Any]:
        """What every recipe records to load this model again (with its adapters, each with its
        sha256), and the retouch version."""
        from retouch.version import __version__

        return {"model": self.name, **({"model_config": self.config} if self.config else {}),
                **({"adapters": [dict(r) for r in self.adapters]} if self.adapters else {}),
                "retouch_version": __version__}


def bundled_model_path(name: str = DEFAULT_MODEL) -> Path:
    """Where the bundled model ``name`` lives inside the installed package."""
    return Path(__file__).resolve().parent.parent / "assets" / name


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32  # float32 everywhere: replays match bit for bit, CPUs run it well
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise RetouchError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def load_model(
    model: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    config: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Load a Stable Diffusion pipeline from any of the forms ``--model`` accepts.

    Args:
        model: ``"shapes-64"`` (the bundled model), a diffusers folder (has ``model_index.json``),
            a single-file ``.safetensors`` checkpoint, a ``.ckpt``/``.bin`` checkpoint that holds
            only tensors, or a hub id such as ``"runwayml/stable-diffusion-v1-5"``.
        device: defaults to CUDA when present, else CPU.
        dtype: ``"float32"`` (default), ``"float16"`` or ``"bfloat16"``.
        config: for single-file checkpoints, a local diffusers folder of the same architecture
            that supplies the configs and tokenizer (needed offline).

    Raises:
        RetouchError: the model is missing, empty, corrupt, unsafe to unpickle, or unreachable.
    """
    torch_dtype = resolve_dtype(dtype)
    device = torch.device(device) if device is not None else default_device()
    path = Path(model).expanduser()
    if model in BUNDLED_MODELS and not path.exists():
        loaded = _load_bundled(model, torch_dtype)
    elif path.is_dir():
        loaded = LoadedModel(
            _load_folder(path, torch_dtype), str(path.resolve()), "folder", defaults=read_model_defaults(path)
        )
    elif path.is_file():
        config_path = Path(config).expanduser().resolve() if config is not None else None
        pipe = _load_single_file(path, torch_dtype, config_path)
        loaded = LoadedModel(
            pipe, str(path.resolve()), "single-file", str(config_path) if config_path else None
        )
    elif _HUB_ID_RE.match(model):
        loaded = LoadedModel(_load_hub(model, torch_dtype), model, "hub")
    else:
        raise RetouchError(
            f"model not found: {model!r} is not a bundled model ({', '.join(BUNDLED_MODELS)}), "
            "an existing file or folder, or a hub id like 'owner/name'"
        )
    loaded.pipe.to(device)
    return loaded


def _load_bundled(name: str, torch_dtype: torch.dtype) -> LoadedModel:
    folder = bundled_model_path(name)
    if not (folder / "model_index.json").is_file():
        raise RetouchError(
            f"the bundled model {name!r} is not installed: expected a diffusers folder at {folder}. "
            f"Install the trained {name} folder there (vae, text_encoder, tokenizer, unet, scheduler, "
            "model_index.json), or pass --model PATH to a local diffusers folder or .safetensors file"
        )
    return LoadedModel(_load_folder(folder, torch_dtype), name, "bundled", defaults=read_model_defaults(folder))


def read_model_defaults(folder: Path) -> dict[str, Any]:
    """The sampling defaults a model folder recommends in ``retouch.json`` (``{}`` when absent)."""
    path = folder / MODEL_DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        defaults = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RetouchError(f"{path} is not valid JSON ({e}); fix or delete it") from e
    scale = defaults.get("guidance_scale") if isinstance(defaults, dict) else None
    if not isinstance(defaults, dict) or (
        scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float) or scale < 0)
    ):
        raise RetouchError(f"{path} must be a JSON object whose guidance_scale is a number >= 0")
    return defaults


def _load_folder(folder: Path, torch_dtype: torch.dtype) -> StableDiffusionPipeline:
    _check_diffusers_folder(folder)
    try:
        return StableDiffusionPipeline.from_pretrained(
            folder,
            dtype=torch_dtype,
            local_files_only=True,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except Exception as e:  # diffusers raises many types for a broken folder; say which folder
        raise RetouchError(
            f"cannot load the diffusers folder {folder}: {type(e).__name__}: {e}. "
            "The folder may be incomplete or corrupt; save it again with save_pretrained"
        ) from e


def _check_diffusers_folder(folder: Path) -> None:
    """Catch the common breakages before diffusers does, with a message naming the file."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise RetouchError(
            f"{folder} is not a diffusers model folder (no model_index.json); pass a folder written "
            "by save_pretrained, or a single-file .safetensors checkpoint"
        )
    try:
        index = json.loads(index_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RetouchError(f"{index_path} is corrupt: not valid JSON ({e})") from e
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        if not (folder / component).is_dir():
            raise RetouchError(
                f"{folder} is incomplete: model_index.json lists {component!r} but there is no such folder"
            )
        for weights in (folder / component).iterdir():
            if weights.suffix in (".safetensors", ".bin", ".json") and weights.stat().st_size == 0:
                raise RetouchError(f"{weights} is empty (0 bytes); the model was not saved completely")


def _load_single_file(path: Path, torch_dtype: torch.dtype, config: Path | None) -> StableDiffusionPipeline:
    if path.stat().st_size == 0:
        raise RetouchError(f"model file is empty (0 bytes): {path}")
    suffix = path.suffix.lower()
    if suffix in SINGLE_FILE_SUFFIXES:
        _check_safetensors(path)
    elif suffix in PICKLE_SUFFIXES:
        torch_load_weights_only(path, mmap=True)  # refuses a pickle that needs arbitrary code
    else:
        raise RetouchError(
            f"unsupported model file {path.name!r}: use a .safetensors checkpoint or a diffusers folder"
        )
    if config is None:
        if not hub_is_reachable():
            raise RetouchError(
                f"{path.name} is a single-file checkpoint, which needs the diffusers configs of its "
                "architecture, and this machine cannot reach the Hugging Face hub. Pass --config FOLDER, "
                "a local diffusers folder of the same architecture (e.g. one saved with save_pretrained)"
            )
    elif not (config / "model_index.json").is_file():
        raise RetouchError(f"--config {config} is not a diffusers folder (no model_index.json)")
    try:
        return StableDiffusionPipeline.from_single_file(
            str(path),
            config=str(config) if config is not None else None,
            dtype=torch_dtype,
            local_files_only=config is not None,
            safety_checker=None,
            requires_safety_checker=False,
        )
    except Exception as e:  # conversion errors come in many types; name the file and the fix
        raise RetouchError(
            f"cannot load the single-file checkpoint {path}: {type(e).__name__}: {e}. "
            "Check that it is a Stable Diffusion checkpoint matching --config"
        ) from e


def _check_safetensors(path: Path) -> None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as e:  # safetensors raises its own Rust error type
        raise RetouchError(f"{path} is not a valid .safetensors file ({e}); the file may be corrupt") from e


def torch_load_weights_only(path: str | os.PathLike[str], mmap: bool = False) -> Any:
    """``torch.load`` the safe way (``weights_only=True``: tensors, numbers, strings, lists and
    dicts only); refuse a pickle that needs arbitrary code, or a corrupt one, with a clear error."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        if "weights only load failed" not in str(e).lower():
            raise RetouchError(
                f"{path} is not a readable PyTorch checkpoint ({e}); the file may be corrupt"
            ) from e
        raise RetouchError(
            f"refusing to unpickle {path}: it holds Python objects besides tensors, and unpickling runs "
            "arbitrary code. Convert it to .safetensors on a machine you trust, or use a diffusers folder"
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise RetouchError(
            f"{path} is not a readable PyTorch checkpoint ({e}); the file may be corrupt"
        ) from e


def _load_hub(repo_id: str, torch_dtype: torch.dtype) -> StableDiffusionPipeline:
    kwargs = {"dtype": torch_dtype, "safety_checker": None, "requires_safety_checker": False}
    if _in_hub_cache(repo_id):
        return StableDiffusionPipeline.from_pretrained(repo_id, local_files_only=True, **kwargs)
    if not hub_is_reachable():
        raise RetouchError(
            f"cannot download {repo_id!r}: this machine is offline (the Hugging Face hub is unreachable or "
            "HF_HUB_OFFLINE is set). Download the model where there is a network, copy the folder here, "
            "and pass --model /path/to/folder (a diffusers folder) or --model FILE.safetensors"
        )
    try:
        return StableDiffusionPipeline.from_pretrained(repo_id, **kwargs)
    except Exception as e:  # hub errors: missing repo, gated repo, network drop
        raise RetouchError(f"cannot load {repo_id!r} from the hub: {type(e).__name__}: {e}") from e


def _in_hub_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "model_index.json"), str)


def hub_is_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """False when HF_HUB_OFFLINE is set or the hub's host takes longer than ``timeout`` to connect.

    The connect runs in a daemon thread because DNS lookups ignore socket timeouts.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return False
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    address = (
        endpoint.hostname or "huggingface.co",
        endpoint.port or (443 if endpoint.scheme == "https" else 80),
    )
    reachable: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            reachable.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reachable)
