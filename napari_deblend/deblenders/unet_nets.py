"""Torch network of the ``unet`` deblender: a small U-Net with a mask head and a flux head.

One forward pass per (stamp, source) pair. The input has four channels: the
two normalised blend channels of :func:`~napari_deblend.deblenders.nets.normalise`
(linear ``x / s`` and asinh), a "this source" hint (a Gaussian blob at the
source) and an "other sources" hint (the sum of the blobs at the others), see
:func:`source_hints`. The outputs are a full-resolution mask logit map (the
share of each pixel's light that belongs to this source) and one number, the
log of the source's flux in units of the stamp scale ``s``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

HINT_SIGMA = 1.5  # pixels
HINT_FLOOR = 1e-6  # blob values below this are set to 0 (denormals make CPU convolutions ~10x slower)
MASKED_FLUX_FLOOR = 1e-2  # in units of s, floor of the masked-flux feature before its log


def gaussian_blobs(positions: torch.Tensor, shape: tuple[int, int], sigma: float = HINT_SIGMA) -> torch.Tensor:
    """Unit-peak Gaussian blobs ``(..., H, W)`` at ``positions`` ``(..., 2)`` ``(y, x)``; tiny values are 0."""
    h, w = shape
    dtype = positions.dtype if positions.dtype.is_floating_point else torch.float32
    yy = torch.arange(h, dtype=dtype, device=positions.device)
    xx = torch.arange(w, dtype=dtype, device=positions.device)
    gy = torch.exp(-0.5 * ((yy - positions[..., :1]) / sigma) ** 2)  # (..., H)
    gx = torch.exp(-0.5 * ((xx - positions[..., 1:]) / sigma) ** 2)  # (..., W)
    blobs = gy[..., :, None] * gx[..., None, :]
    return torch.where(blobs < HINT_FLOOR, torch.zeros_like(blobs), blobs)


def source_hints(
    this: torch.Tensor, others: torch.Tensor, valid: torch.Tensor, shape: tuple[int, int], sigma: float = HINT_SIGMA
) -> torch.Tensor:
    """The two hint channels ``(B, 2, H, W)``: a blob at ``this`` and the sum of blobs at the valid ``others``.

    Parameters
    ----------
    this : torch.Tensor
        ``(B, 2)`` position ``(y, x)`` of the source to extract.
    others : torch.Tensor
        ``(B, M, 2)`` positions of the other sources (padding rows are ignored).
    valid : torch.Tensor
        ``(B, M)`` bool, which rows of ``others`` are sources.
    shape : tuple of int
        ``(H, W)`` of the stamp.
    """
    mine = gaussian_blobs(this, shape, sigma)
    if others.shape[1]:
        rest = (gaussian_blobs(others, shape, sigma) * valid[..., None, None].to(mine.dtype)).sum(dim=1)
    else:
        rest = torch.zeros_like(mine)
    return torch.stack([mine, rest], dim=1)


def _norm(channels: int, kind: str) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(min(8, channels // 2), channels)


class DoubleConv(nn.Module):
    """Two 3x3 convolution + normalisation + ReLU layers."""

    def __init__(self, cin: int, cout: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout, norm), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout, norm), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNet(nn.Module):
    """U-Net (three levels and a bottleneck at 1/8 resolution) with a mask head and a flux head.

    Parameters
    ----------
    in_channels : int
        4: linear and asinh blend channels, "this source" and "other sources" hints.
    widths : tuple of int
        Channels at full, 1/2 and 1/4 resolution; the bottleneck has twice the last.
    norm : {"group", "batch"}
        Normalisation layers.
    hidden : int
        Hidden units of the flux MLP.
    hint_sigma : float
        Sigma (pixels) of the hint blobs the network was trained with (kept with the weights).

    Notes
    -----
    ``forward`` returns ``(logit, log_flux)``: ``logit`` ``(B, 1, H, W)`` is the
    mask logit, ``log_flux`` ``(B,)`` is ``log(flux / s)``. The flux MLP sees
    the global average and max pools of the bottleneck and of the last decoder
    features, plus two scalars computed with the (detached) predicted mask
    ``m``: ``log(max(sum(m * x / s), 0.01))`` (the flux the mask alone would
    give) and ``log(1 + sum(m))`` (its area), so the head learns a correction
    to the masked flux instead of the flux from scratch.
    """

    def __init__(
        self,
        in_channels: int = 4,
        widths: tuple[int, int, int] = (16, 32, 64),
        norm: str = "batch",
        hidden: int = 64,
        hint_sigma: float = HINT_SIGMA,
    ) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.config = {
            "in_channels": in_channels, "widths": list(widths), "norm": norm, "hidden": hidden,
            "hint_sigma": float(hint_sigma),
        }
        w1, w2, w3 = widths
        wb = 2 * w3
        self.enc1 = DoubleConv(in_channels, w1, norm)
        self.enc2 = DoubleConv(w1, w2, norm)
        self.enc3 = DoubleConv(w2, w3, norm)
        self.bottleneck = DoubleConv(w3, wb, norm)
        self.up3 = nn.ConvTranspose2d(wb, w3, 2, stride=2)
        self.dec3 = DoubleConv(2 * w3, w3, norm)
        self.up2 = nn.ConvTranspose2d(w3, w2, 2, stride=2)
        self.dec2 = DoubleConv(2 * w2, w2, norm)
        self.up1 = nn.ConvTranspose2d(w2, w1, 2, stride=2)
        self.dec1 = DoubleConv(2 * w1, w1, norm)
        self.mask_head = nn.Conv2d(w1, 1, 1)
        self.flux_head = nn.Sequential(
            nn.Linear(2 * wb + 2 * w1 + 2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % 8, (-w) % 8
        if pad_h or pad_w:
            # zeros: the hints stay blobs, and the blend channels read as empty sky beyond the stamp
            x = F.pad(x, (0, pad_w, 0, pad_h))
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        b = self.bottleneck(F.max_pool2d(e3, 2))
        d3 = self.dec3(torch.cat([self.up3(b), e3], dim=1))
        d2 = self.dec2(torch.cat([self.up2(d3), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        logit = self.mask_head(d1)[..., :h, :w]
        d1 = d1[..., :h, :w]
        mask = torch.sigmoid(logit.detach().float())
        linear = x[:, :1, :h, :w].float()
        masked_flux = (mask * linear).sum(dim=(1, 2, 3)).clamp(min=MASKED_FLUX_FLOOR).log()
        area = torch.log1p(mask.sum(dim=(1, 2, 3)))
        pooled = torch.cat(
            [
                F.adaptive_avg_pool2d(b, 1).flatten(1), F.adaptive_max_pool2d(b, 1).flatten(1),
                F.adaptive_avg_pool2d(d1, 1).flatten(1), F.adaptive_max_pool2d(d1, 1).flatten(1),
                masked_flux[:, None].to(b.dtype), area[:, None].to(b.dtype),
            ],
            dim=1,
        )
        log_flux = self.flux_head(pooled).squeeze(1) + masked_flux.to(pooled.dtype)
        return logit, log_flux
