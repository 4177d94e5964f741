"""SqueezeNet 1.1's feature layers cut into LPIPS' seven slices (Zhang et al. 2018, the ``squeeze``
variant), written out because torchvision, which defines the network, is not a dependency.

Layer for layer it is ``torchvision.models.squeezenet1_1().features`` (indices kept, so torchvision's
``squeezenet1_1-b8a52dc0.pth`` loads under ``features.N.*``), sliced as the ``lpips`` package and
torchmetrics' ``SqueezeNet`` slice it: ``[0, 2)``, ``[2, 5)``, ``[5, 8)``, ``[8, 10)``, 10, 11, 12.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

CHANNELS = (64, 128, 256, 384, 384, 512, 512)  # the seven slices' outputs
BOUNDS = ((0, 2), (2, 5), (5, 8), (8, 10), (10, 11), (11, 12), (12, 13))
SLICE_OF = {i: k for k, (start, stop) in enumerate(BOUNDS, 1) for i in range(start, stop)}  # features index -> slice


class Fire(nn.Module):
    """SqueezeNet's fire module: a 1x1 squeeze, then 1x1 and 3x3 expands side by side."""

    def __init__(self, inplanes: int, squeeze: int, expand1x1: int, expand3x3: int) -> None:
        super().__init__()
        self.squeeze = nn.Conv2d(inplanes, squeeze, kernel_size=1)
        self.squeeze_activation = nn.ReLU()
        self.expand1x1 = nn.Conv2d(squeeze, expand1x1, kernel_size=1)
        self.expand1x1_activation = nn.ReLU()
        self.expand3x3 = nn.Conv2d(squeeze, expand3x3, kernel_size=3, padding=1)
        self.expand3x3_activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [self.expand1x1_activation(self.expand1x1(x)), self.expand3x3_activation(self.expand3x3(x))], 1
        )


def squeezenet1_1_features() -> list[nn.Module]:
    """``torchvision.models.squeezenet1_1().features``, as a list of its 13 layers."""
    pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True)  # noqa: E731
    return [
        nn.Conv2d(3, 64, kernel_size=3, stride=2),
        nn.ReLU(),
        pool(),
        Fire(64, 16, 64, 64),
        Fire(128, 16, 64, 64),
        pool(),
        Fire(128, 32, 128, 128),
        Fire(256, 32, 128, 128),
        pool(),
        Fire(256, 48, 192, 192),
        Fire(384, 48, 192, 192),
        Fire(384, 64, 256, 256),
        Fire(512, 64, 256, 256),
    ]


class SqueezeNetSlices(nn.Module):
    """The features cut after each LPIPS tap, module names ``slice1.0`` ... ``slice7.12``."""

    def __init__(self) -> None:
        super().__init__()
        layers = squeezenet1_1_features()
        for k, (start, stop) in enumerate(BOUNDS, 1):
            self.add_module(f"slice{k}", nn.Sequential(OrderedDict((str(i), layers[i]) for i in range(start, stop))))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for k in range(1, len(BOUNDS) + 1):
            x = getattr(self, f"slice{k}")(x)
            outputs.append(x)
        return outputs
