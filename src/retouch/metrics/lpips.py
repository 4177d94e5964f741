"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), AlexNet and SqueezeNet variants, written out here: the ``lpips`` package imports torchvision
and downloads its backbones, neither of which this project may do.

The network matches ``lpips.LPIPS(net="alex")`` (or ``net="squeeze"``, the one PIE-Bench's
``LearnedPerceptualImagePatchSimilarity(net_type="squeeze")`` uses) layer for layer, so its
``state_dict()`` loads as is. The weights come from local files (see ``missing_message``): either that
state dict, or torchvision's backbone file (``alexnet-owt-7be5be79.pth``, ``squeezenet1_1-b8a52dc0.pth``)
and the linear heads (the ``lpips`` package's ``weights/v0.1/NET.pth``; for ``squeeze`` the copy that
torchmetrics installs is used when no other is given).
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from retouch.errors import RetouchError
from retouch.metrics import squeezenet
from retouch.metrics.weights import MissingWeights, load_state_dict, metrics_dir

DEFAULT_NAMES = ("lpips_alex.safetensors", "lpips_alex.pth")
BACKBONE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}  # torchvision's
CHANNELS = (64, 192, 384, 256, 256)  # AlexNet's relu1..relu5
NET_CHANNELS = {"alex": CHANNELS, "squeeze": squeezenet.CHANNELS}
NET_LABELS = {"alex": "AlexNet", "squeeze": "SqueezeNet"}
# the input scaling of lpips' ScalingLayer: inputs in [-1, 1] -> ImageNet statistics
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
# torchvision's features index -> the LPIPS slice it belongs to
_SLICE_OF = {"alex": {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}, "squeeze": squeezenet.SLICE_OF}


def default_names(net: str = "alex") -> tuple[str, ...]:
    """The files looked for in the metrics folder, in order."""
    names = (f"lpips_{net}.safetensors", f"lpips_{net}.pth")
    return names + ((BACKBONE_FILES[net],) if net == "squeeze" else ())


def missing_message(folder: Path | None = None, net: str = "alex") -> str:
    folder = folder or metrics_dir()
    heads = "" if net == "squeeze" else f" and the lpips package's weights/v0.1/{net}.pth"
    return (
        f"LPIPS needs the {NET_LABELS[net]} LPIPS network as a local file. Put it at "
        f"{folder / default_names(net)[0]} (or pass --lpips-weights PATH): the state_dict of "
        f"lpips.LPIPS(net='{net}') saved with safetensors or torch.save, made on a machine with the lpips "
        f"package and torchvision; or pass --lpips-weights with torchvision's {BACKBONE_FILES[net]}{heads}"
    )


def _check_net(net: str) -> None:
    if net not in NET_CHANNELS:
        raise RetouchError(f"unknown LPIPS network {net!r}: use one of {', '.join(NET_CHANNELS)}")


class _ScalingLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(SHIFT)[None, :, None, None])
        self.register_buffer("scale", torch.tensor(SCALE)[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.shift) / self.scale


class _AlexNetSlices(nn.Module):
    """``torchvision.models.alexnet().features`` cut after each ReLU, indices kept."""

    def __init__(self) -> None:
        super().__init__()
        layers = [
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(inplace=False),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(inplace=False),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(inplace=False),
        ]
        bounds = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 12))
        for k, (start, stop) in enumerate(bounds, 1):
            modules = OrderedDict((str(i), layers[i]) for i in range(start, stop))
            self.add_module(f"slice{k}", nn.Sequential(modules))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for k in range(1, 6):
            x = getattr(self, f"slice{k}")(x)
            outputs.append(x)
        return outputs


class _NetLinLayer(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, stride=1, padding=0, bias=False))


class LPIPS(nn.Module):
    """d(x, y) = sum over layers l of mean over pixels of ||w_l * (f_l(x) - f_l(y))||^2, with f_l
    unit-normalised across channels (Zhang et al. 2018, eq. 1). ``net``: ``alex`` or ``squeeze``."""

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        _check_net(net)
        self.net_name = net
        self.scaling_layer = _ScalingLayer()
        self.net = _AlexNetSlices() if net == "alex" else squeezenet.SqueezeNetSlices()
        for k, channels in enumerate(NET_CHANNELS[net]):
            self.add_module(f"lin{k}", _NetLinLayer(channels))
        self.eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x, y: (batch, 3, H, W) in [-1, 1] -> (batch,) distances."""
        fx, fy = self.net(self.scaling_layer(x)), self.net(self.scaling_layer(y))
        total = torch.zeros(x.shape[0], device=x.device)
        for k, (a, b) in enumerate(zip(fx, fy, strict=True)):
            a = a / (a.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.pow(2).sum(dim=1, keepdim=True).sqrt() + 1e-10)
            weighted = getattr(self, f"lin{k}").model((a - b) ** 2)  # (batch, 1, h, w)
            total = total + weighted.mean(dim=(1, 2, 3))
        return total


def lpips_state_dict(state: dict[str, torch.Tensor], net: str = "alex") -> dict[str, torch.Tensor]:
    """Key names of lpips.LPIPS, torchmetrics' LPIPS, torchvision's backbone or the lpips
    linear-layer file -> ours."""
    _check_net(net)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if match := re.fullmatch(r"features\.(\d+)\.(.+)", key):
            index = int(match.group(1))
            if index in _SLICE_OF[net]:
                out[f"net.slice{_SLICE_OF[net][index]}.{index}.{match.group(2)}"] = value
        elif match := re.fullmatch(r"net\.slices\.(\d+)\.(.+)", key):  # torchmetrics' SqueezeNet
            out[f"net.slice{int(match.group(1)) + 1}.{match.group(2)}"] = value
        elif match := re.fullmatch(r"lins\.(\d)\.(.+)", key):
            out.setdefault(f"lin{match.group(1)}.{match.group(2)}", value)
        elif key.startswith(("net.", "lin", "scaling_layer.")):
            out[key] = value
    return out


def default_lpips_paths(net: str = "alex") -> list[Path]:
    for name in default_names(net):
        if (metrics_dir() / name).is_file():
            return [metrics_dir() / name]
    return []


def bundled_heads(net: str) -> Path | None:
    """The linear heads torchmetrics installs (``lpips_models/NET.pth``), when present."""
    from importlib.util import find_spec

    spec = find_spec("torchmetrics")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "functional" / "image" / "lpips_models" / f"{net}.pth"
    return path if path.is_file() else None


def load_lpips(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    device: str | torch.device = "cpu",
    net: str = "alex",
) -> LPIPS:
    """The LPIPS network ``net`` with weights merged from ``paths`` (default: the metrics folder's
    file). For ``squeeze`` the linear heads torchmetrics installs come first, so torchvision's
    backbone file alone is enough.

    Raises:
        MissingWeights: no file given or found; the message names the file needed and where.
        RetouchError: the files lack some of the network's weights.
    """
    _check_net(net)
    if paths is None or paths == []:
        paths = default_lpips_paths(net)
        if not paths:
            raise MissingWeights(missing_message(net=net))
    elif isinstance(paths, str | os.PathLike):
        paths = [paths]
    heads = bundled_heads(net) if net == "squeeze" else None
    state: dict[str, torch.Tensor] = lpips_state_dict(load_state_dict(heads), net) if heads else {}
    for path in paths:
        if not Path(path).expanduser().is_file():
            raise MissingWeights(f"LPIPS weights file not found: {path}. " + missing_message(net=net))
        state.update(lpips_state_dict(load_state_dict(path), net))
    model = LPIPS(net)
    expected = model.state_dict()
    missing = sorted(k for k in expected if k not in state and not k.startswith("scaling_layer."))
    if missing:
        raise RetouchError(
            f"the LPIPS weights in {', '.join(map(str, paths))} lack {len(missing)} tensors "
            f"(e.g. {missing[:3]}). " + missing_message(net=net)
        )
    for key, value in state.items():
        if key in expected and value.shape != expected[key].shape:
            raise RetouchError(
                f"LPIPS weight {key} has shape {tuple(value.shape)}, expected {tuple(expected[key].shape)}"
            )
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    return model.to(device)


def to_lpips_input(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None].float() / 127.5 - 1.0


@torch.no_grad()
def lpips_distance(model: LPIPS, a: np.ndarray, b: np.ndarray) -> float:
    """LPIPS between two (H, W, 3) uint8 pictures of one size (0 = identical, larger = more different)."""
    if a.shape != b.shape:
        raise RetouchError(f"LPIPS compares pictures of one size, got {a.shape} and {b.shape}")
    device = next(model.parameters()).device
    return float(model(to_lpips_input(a).to(device), to_lpips_input(b).to(device))[0])
