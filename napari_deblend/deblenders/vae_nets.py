"""Torch networks of the ``vae`` deblender: a convolutional encoder and a decoder with a sigma output.

Pixel space: the decoder draws a galaxy in the asinh space
``y = asinh(x / sigma_noise) / 8`` (the second channel of
:func:`~napari_deblend.deblenders.nets.normalise`), which holds the 0.4-1500 sigma
range of galaxy pixels in a range a decoder can learn without a per-stamp
scale; :func:`from_asinh` maps it back to electrons. Its second output channel
is the log of a per-pixel standard deviation in that space (a Gaussian output
layer, as in DebVAder), which :func:`from_asinh` propagates to electrons.

Shapes: 48x48 stamps centred on the galaxy (pixel 24, 24); four stride-2
convolutions down to 3x3, a dense layer to the latent code (mean and log
variance of ``latent`` dimensions), and the mirror image up.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .nets import ASINH_DIVISOR, ASINH_SOFTENING

STAMP = 48
SIGMA_FLOOR = 5e-4  # asinh units: the decoder's sigma never goes below this


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1),
    )


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(8, cout // 4), cout), nn.LeakyReLU(0.1),
        nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.1),
    )


class Encoder(nn.Module):
    """``(B, 2, 48, 48)`` normalised stamp -> latent mean and log variance ``(B, latent)`` each.

    The VAE's encoder and the deblending encoder are two instances of this class.
    """

    def __init__(self, in_channels: int = 2, latent: int = 32, widths: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.config = {"in_channels": in_channels, "latent": latent, "widths": list(widths)}
        layers, cin = [], in_channels
        for w in widths:
            layers.append(_down(cin, w))
            cin = w
        self.body = nn.Sequential(*layers)
        side = STAMP // 2 ** len(widths)
        self.head = nn.Linear(cin * side * side, 2 * latent)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.head(self.body(x).flatten(1)).chunk(2, dim=1)
        return mean, log_var.clamp(-12.0, 6.0)


class Decoder(nn.Module):
    """Latent code ``(B, latent)`` -> asinh-space image mean and log sigma ``(B, 1, 48, 48)`` each."""

    def __init__(self, latent: int = 32, widths: tuple[int, ...] = (128, 64, 32, 16), out_channels: int = 1) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.config = {"latent": latent, "widths": list(widths), "out_channels": out_channels}
        self.side = STAMP // 2 ** len(widths)
        self.first = widths[0]
        self.head = nn.Linear(latent, widths[0] * self.side * self.side)
        layers, cin = [], widths[0]
        for w in widths[1:] + (widths[-1],):
            layers.append(_up(cin, w))
            cin = w
        self.body = nn.Sequential(*layers)
        self.out = nn.Conv2d(cin, 2 * out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.head(z).view(-1, self.first, self.side, self.side)
        mean, log_sigma = self.out(self.body(h)).chunk(2, dim=1)
        # galaxies are non-negative: a softplus lets the sky go to ~0 (softplus(-10) ~ 5e-5, 0.2 e- here)
        # where a small offset of either sign over thousands of pixels would bias the flux by several
        # percent (the "pedestal"); unlike a ReLU it cannot die
        return F.softplus(mean), torch.log(torch.exp(log_sigma.clamp(max=3.0)) + SIGMA_FLOOR)


def to_asinh(x: torch.Tensor, sigma_noise: torch.Tensor) -> torch.Tensor:
    """Electrons -> the decoder's asinh space (``sigma_noise`` broadcast ``(B, 1, 1, 1)``)."""
    return torch.asinh(x / (ASINH_SOFTENING * sigma_noise)) / ASINH_DIVISOR


def from_asinh(mean: torch.Tensor, log_sigma: torch.Tensor, sigma_noise: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder outputs -> image and per-pixel standard deviation in electrons (first-order propagation)."""
    scale = ASINH_SOFTENING * sigma_noise
    image = scale * torch.sinh(ASINH_DIVISOR * mean)
    sigma = scale * ASINH_DIVISOR * torch.cosh(ASINH_DIVISOR * mean) * torch.exp(log_sigma)
    return image, sigma


def recentre(images: torch.Tensor, centres: torch.Tensor, size: int = STAMP) -> tuple[torch.Tensor, torch.Tensor]:
    """Crops ``(B, C, size, size)`` with pixel ``round(centre)`` at ``(size // 2, size // 2)``; zeros outside.

    Returns the crops and the integer offsets ``(B, 2)``: crop pixel ``(i, j)``
    is image pixel ``(i + dy, j + dx)``.
    """
    b, c, h, w = images.shape
    half = size // 2
    padded = torch.nn.functional.pad(images, (size, size, size, size))
    centre = torch.round(centres).long()
    centre[:, 0] = centre[:, 0].clamp(-half, h - 1 + half)
    centre[:, 1] = centre[:, 1].clamp(-half, w - 1 + half)
    offsets = centre - half
    crops = torch.stack([
        padded[i, :, size + int(oy): size + int(oy) + size, size + int(ox): size + int(ox) + size]
        for i, (oy, ox) in enumerate(offsets.tolist())
    ])
    return crops, offsets
