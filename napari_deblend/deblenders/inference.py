"""Inference-only speed-ups of trained networks.

:func:`fold_batchnorm` merges every ``Conv2d`` → ``BatchNorm2d`` pair of a
network in evaluation mode into one convolution (the normalisation is then an
affine map known in advance). The outputs are the same to float rounding and a
convolution-heavy classifier runs about twice as fast on a CPU.

:func:`memory_format_for` picks the channels-last layout on a CPU, where
oneDNN's convolutions run 20-30 % faster with it on these small networks
(peeling: 28.7 vs 36.5 ms a blend, one thread).
"""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def fold_batchnorm(net: nn.Module) -> nn.Module:
    """Fold each ``BatchNorm2d`` that directly follows a ``Conv2d`` in a ``Sequential`` into it, in place.

    Only for inference: the network is put in evaluation mode and the folded
    normalisations become ``nn.Identity`` (training it again would not update
    running statistics). Returns ``net``.

    Parameters
    ----------
    net : torch.nn.Module
        A trained network.
    """
    net.eval()
    for module in net.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for previous, name in zip(names, names[1:]):
            conv, norm = module._modules[previous], module._modules[name]
            if not (isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats):
                continue
            gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
            conv.weight.mul_(gain.view(-1, 1, 1, 1))
            conv.bias = nn.Parameter((bias - norm.running_mean) * gain + norm.bias)
            module._modules[name] = nn.Identity()
    return net


def memory_format_for(device: torch.device | str) -> torch.memory_format:
    """The tensor layout that convolutions run fastest in on ``device``: channels-last on a CPU."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format
