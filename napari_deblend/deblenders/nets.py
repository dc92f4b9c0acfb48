"""Torch networks of the peeling deblender: a Residual Dense Network and a galaxy counter.

Both take the same normalised input (see :func:`normalise`): a linear channel
``x / s`` (``s`` a per-stamp scale near the brightest peak) and an asinh
channel ``asinh(x / sigma) / 8`` that keeps faint light visible.

The RDN follows Zhang et al. (2018) as used by Wang et al. (2021), sized for a
2-core CPU: the dense blocks run at a quarter of the resolution (two stride-2
convolutions in, two pixel shuffles with skip connections out), which cuts the
cost sixteen-fold and gives a receptive field wider than a 48-pixel stamp.

An optional detail refiner (``refine_width`` > 0) adds what a quarter
resolution cannot see: a small two-level network at full and half resolution
that reads the input, the RDN's estimate and its full-resolution features and
adds a correction to the estimate. Its last convolution starts at zero, so a
refiner grafted onto trained weights starts from exactly their output. Tried
once (width 16, 95 minutes on the shipped weights): on 1000 validation pairs the
flux scatter went 7.08 / 14.56 % -> 6.98 / 14.55 % (brighter / fainter) for
about half again the RDN's cost, so the shipped weights have none.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

ASINH_SOFTENING = 1.0  # in units of the noise sigma
ASINH_DIVISOR = 8.0
SCALE_FLOOR_SIGMAS = 5.0


def stamp_scale(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-stamp scale ``s`` ``(N, 1, 1, 1)``: the peak of the 3x3-smoothed band sum, at least 5 sigma."""
    smooth = F.avg_pool2d(x.sum(dim=1, keepdim=True), 3, stride=1, padding=1)
    peak = smooth.flatten(1).max(dim=1).values
    return torch.maximum(peak, SCALE_FLOOR_SIGMAS * sigma).view(-1, 1, 1, 1)


def normalise(x: torch.Tensor, sigma: torch.Tensor, scale: torch.Tensor | None = None):
    """Network input ``(N, 2C, H, W)`` and the scale ``s`` that maps outputs back to electrons.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H, W)`` stamps in electrons.
    sigma : torch.Tensor
        ``(N,)`` background noise sigma.
    scale : torch.Tensor, optional
        Scale to use instead of :func:`stamp_scale`.
    """
    sigma = sigma.view(-1, 1, 1, 1)
    if scale is None:
        scale = stamp_scale(x, sigma.view(-1))
    linear = torch.clamp(x / scale, -1.0, 2.0)
    soft = torch.asinh(x / (ASINH_SOFTENING * sigma)) / ASINH_DIVISOR
    return torch.cat([linear, soft], dim=1), scale


def joint_input(residual: torch.Tensor, others: torch.Tensor, own: torch.Tensor, sigma: torch.Tensor):
    """Input ``(N, 6C, H, W)`` of the peeling deblender's joint refiner and the scale of its output.

    :func:`normalise` of ``residual`` (the blend minus the other components),
    then of ``others`` (their sum) and ``own`` (the component's previous
    estimate) at the residual's scale.
    """
    inp, scale = normalise(residual, sigma)
    return torch.cat([inp, normalise(others, sigma, scale)[0], normalise(own, sigma, scale)[0]], dim=1), scale


class DenseLayer(nn.Module):
    """3x3 convolution + ReLU whose output is concatenated to its input."""

    def __init__(self, in_channels: int, growth: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, growth, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, F.relu(self.conv(x))], dim=1)


class ResidualDenseBlock(nn.Module):
    """``n_layers`` densely connected layers, a 1x1 local feature fusion, and a local residual."""

    def __init__(self, channels: int, growth: int, n_layers: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*[DenseLayer(channels + i * growth, growth) for i in range(n_layers)])
        self.fuse = nn.Conv2d(channels + n_layers * growth, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fuse(self.layers(x))


class RDN(nn.Module):
    """Residual Dense Network returning the brightest galaxy (in units of the stamp scale).

    Shallow features at full resolution, two stride-2 convolutions down to a
    quarter resolution where the residual dense blocks and the global feature
    fusion run, then two pixel-shuffle upsamplings with skip connections back to
    full resolution.

    Parameters
    ----------
    in_channels : int
        Input channels (2 per band: linear and asinh).
    out_channels : int
        Output bands.
    features : int
        G0, channels between dense blocks.
    growth : int
        G, channels each dense layer adds.
    n_blocks : int
        D, residual dense blocks.
    n_layers : int
        C, layers per block.
    width : int
        Channels at full resolution (twice that at half resolution).
    refine_width : int
        Channels of the detail refiner at full resolution (twice that at half
        resolution); 0 for none.
    """

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 1,
        features: int = 32,
        growth: int = 16,
        n_blocks: int = 6,
        n_layers: int = 3,
        width: int = 8,
        refine_width: int = 0,
    ) -> None:
        super().__init__()
        self.config = {
            "in_channels": in_channels,
            "out_channels": out_channels,
            "features": features,
            "growth": growth,
            "n_blocks": n_blocks,
            "n_layers": n_layers,
            "width": width,
        }
        if refine_width:  # absent from the config of refiner-less weights, which stay loadable as they are
            self.config["refine_width"] = refine_width
        w1, w2 = width, 2 * width
        self.head = nn.Sequential(nn.Conv2d(in_channels, w1, 3, padding=1), nn.ReLU())
        self.down1 = nn.Sequential(nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.ReLU())
        self.down2 = nn.Conv2d(w2, features, 3, stride=2, padding=1)
        self.blocks = nn.ModuleList([ResidualDenseBlock(features, growth, n_layers) for _ in range(n_blocks)])
        self.global_fuse = nn.Sequential(
            nn.Conv2d(n_blocks * features, features, 1), nn.Conv2d(features, features, 3, padding=1)
        )
        self.up1 = nn.Sequential(nn.Conv2d(features, 4 * w2, 3, padding=1), nn.PixelShuffle(2))
        self.merge1 = nn.Sequential(nn.Conv2d(2 * w2, w2, 3, padding=1), nn.ReLU())
        self.up2 = nn.Sequential(nn.Conv2d(w2, 4 * w1, 3, padding=1), nn.PixelShuffle(2))
        self.merge2 = nn.Sequential(nn.Conv2d(2 * w1, w1, 3, padding=1), nn.ReLU())
        self.tail = nn.Conv2d(w1, out_channels, 3, padding=1)
        self.refiner = DetailRefiner(in_channels + out_channels + w1, out_channels, refine_width) if refine_width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % 4, (-w) % 4
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        full = self.head(x)
        half = self.down1(full)
        f0 = self.down2(half)
        outs, f = [], f0
        for block in self.blocks:
            f = block(f)
            outs.append(f)
        f = self.global_fuse(torch.cat(outs, dim=1)) + f0
        f = self.merge1(torch.cat([self.up1(f), half], dim=1))
        f = self.merge2(torch.cat([self.up2(f), full], dim=1))
        out = self.tail(f)
        if self.refiner is not None:
            out = out + self.refiner(torch.cat([x, out, f], dim=1))
        out = out[..., :h, :w]
        # linear while training (a ReLU output can die: all-zero images, no gradient); non-negative when used
        return out if self.training else F.relu(out)


class DetailRefiner(nn.Module):
    """Full/half-resolution correction network with a zero-initialised output (see module docstring).

    Parameters
    ----------
    in_channels : int
        Input channels (network input, estimate and full-resolution features).
    out_channels : int
        Output bands.
    width : int
        Channels at full resolution (twice that at half resolution).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int) -> None:
        super().__init__()
        w1, w2 = width, 2 * width
        self.full = nn.Sequential(nn.Conv2d(in_channels, w1, 3, padding=1), nn.ReLU())
        self.coarse = nn.Sequential(
            nn.Conv2d(w1, w2, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w2, 4 * w1, 3, padding=1), nn.PixelShuffle(2),
        )
        self.merge = nn.Sequential(
            nn.Conv2d(2 * w1, w1, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w1, w1, 3, padding=1), nn.ReLU(),
        )
        self.out = nn.Conv2d(w1, out_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = self.full(x)
        return self.out(self.merge(torch.cat([self.coarse(full), full], dim=1)))


class GalaxyCounter(nn.Module):
    """CNN classifier: how many galaxies (0, 1, 2, 3+) the stamp holds."""

    def __init__(self, in_channels: int = 2, n_classes: int = 4, width: int = 32) -> None:
        super().__init__()
        self.config = {"in_channels": in_channels, "n_classes": n_classes, "width": width}

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            )

        self.features = nn.Sequential(
            block(in_channels, width), nn.MaxPool2d(2),
            block(width, 2 * width), nn.MaxPool2d(2),
            block(2 * width, 4 * width),
        )
        self.classify = nn.Sequential(nn.Flatten(), nn.Linear(8 * width, 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        pooled = torch.cat([F.adaptive_avg_pool2d(f, 1), F.adaptive_max_pool2d(f, 1)], dim=1)
        return self.classify(pooled)
