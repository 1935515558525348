"""The StarDist-method network in PyTorch: a compact U-Net with two heads.

Outputs, per pixel of the input (grid 1):

``prob``  (N, 1, H, W)
    object probability (sigmoid applied at inference, logits during training);
``dist``  (N, n_rays, H, W)
    radial distances (pixels) to the object boundary along ``n_rays`` equally
    spaced rays, as in :func:`stardist.star_dist`.

Input height and width must be multiples of ``2 ** depth`` (the tiler pads).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["StarDistUNet", "build_network", "input_multiple"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class StarDistUNet(nn.Module):
    """U-Net (``len(channels)`` levels) with probability and distance heads.

    Parameters
    ----------
    n_rays : int
        Number of radial directions.
    channels : sequence of int
        Feature channels per level, e.g. ``(16, 32, 64)``; the bottom level is the last.
    in_channels : int
        3 (RGB).
    head_channels : int
        Width of the shared 3x3 conv before the two 1x1 heads.
    """

    def __init__(self, n_rays: int = 32, channels=(16, 32, 64), in_channels: int = 3, head_channels: int = 64):
        super().__init__()
        self.n_rays = int(n_rays)
        self.channels = tuple(int(c) for c in channels)
        self.down = nn.ModuleList()
        cin = in_channels
        for c in self.channels:
            self.down.append(_block(cin, c))
            cin = c
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.upconv = nn.ModuleList()
        for c_skip in reversed(self.channels[:-1]):
            self.upconv.append(nn.ConvTranspose2d(cin, c_skip, 2, stride=2))
            self.up.append(_block(2 * c_skip, c_skip))
            cin = c_skip
        self.features = nn.Sequential(nn.Conv2d(cin, head_channels, 3, padding=1), nn.ReLU(inplace=True))
        self.prob_head = nn.Conv2d(head_channels, 1, 1)
        self.dist_head = nn.Conv2d(head_channels, self.n_rays, 1)

    @property
    def depth(self) -> int:
        """Down-sampling steps of the U-Net (levels - 1)."""
        return len(self.channels) - 1

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        """The shared features ``(N, head_channels, H, W)`` both heads read, of a batch ``(N, 3, H, W)``."""
        skips = []
        for i, blk in enumerate(self.down):
            x = blk(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for upc, blk in zip(self.upconv, self.up, strict=False):
            x = upc(x)
            x = blk(torch.cat([x, skips.pop()], dim=1))
        return self.features(x)

    def forward(self, x: torch.Tensor):
        """Probability logits ``(N, 1, H, W)`` and ray distances ``(N, n_rays, H, W)`` of a batch ``(N, 3, H, W)``."""
        f = self.features_of(x)
        prob_logit = self.prob_head(f)
        # distances are positive; softplus keeps gradients alive near zero
        dist = nn.functional.softplus(self.dist_head(f))
        return prob_logit, dist


def build_network(arch: dict) -> StarDistUNet:
    """Network from a model card's ``architecture`` section."""
    return StarDistUNet(
        n_rays=arch.get("n_rays", 32),
        channels=tuple(arch.get("channels", (16, 32, 64))),
        head_channels=arch.get("head_channels", 64),
    )


def input_multiple(arch: dict) -> int:
    """Input sizes must be multiples of this."""
    return 2 ** (len(arch.get("channels", (16, 32, 64))) - 1)
