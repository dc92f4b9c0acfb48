"""Inference-only speed-ups of trained networks.

:func:`fold_batchnorm` merges every ``Conv2d`` → ``BatchNorm2d`` pair of a
network in evaluation mode into one convolution (the normalisation is then an
affine map known in advance). The outputs are the same to float rounding and a
convolution-heavy classifier runs about twice as fast on a CPU.

:func:`memory_format_for` picks the channels-last layout on a CPU, where
oneDNN's convolutions run 20-30 % faster with it on these small networks
(peeling: 28.7 vs 36.5 ms a blend, one thread).

:func:`autocast_dtype_for` picks the reduced precision a network runs in:
float16 on CUDA, bfloat16 on a CPU whose oneDNN computes it natively (AVX-512
or Arm bf16; the peeling joint refiner: 0.77 against 1.5 ms a stamp), float32
elsewhere. Flux figures do not move with it (1000 validation pairs: Δf/f
scatter 5.80 / 13.51 % in bfloat16 against 5.81 / 13.54 % in float32).

:func:`flip_average` is test-time augmentation: a network's output averaged
over the four flips of its input, each flipped back.
"""

from __future__ import annotations

import torch
from torch import nn

PRECISIONS = ("auto", "float32")
#: The flips :func:`flip_average` uses, as the image axes to flip (none, x, y, both), in order.
FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))


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


def cpu_computes_bfloat16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (oneDNN's own check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN
        return False


def autocast_dtype_for(device: torch.device | str, precision: str = "auto") -> torch.dtype | None:
    """The dtype to autocast a network's forward pass to on ``device``, or None for float32.

    Parameters
    ----------
    device : torch.device or str
        Where the network runs.
    precision : {"auto", "float32"}
        ``"auto"``: float16 on CUDA, bfloat16 on a CPU that computes it natively,
        float32 otherwise; ``"float32"``: always float32.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: expected one of {', '.join(PRECISIONS)}")
    kind = torch.device(device).type
    if precision == "float32":
        return None
    if kind == "cuda":
        return torch.float16
    if kind == "cpu" and cpu_computes_bfloat16():
        return torch.bfloat16
    return None


def flip_outputs(net: nn.Module, x: torch.Tensor, n_flips: int = 4,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``net``'s outputs ``(n_flips, N, C, H, W)`` (float32) on the first ``n_flips`` of :data:`FLIPS` of ``x``.

    The flips go through the network as one batch of ``n_flips * N``; each
    output is flipped back.
    """
    if not 1 <= n_flips <= len(FLIPS):
        raise ValueError(f"n_flips={n_flips}: expected 1 to {len(FLIPS)}")
    flips = FLIPS[:n_flips]
    batch = torch.cat([torch.flip(x, dims) if dims else x for dims in flips])
    out = net(batch.contiguous(memory_format=memory_format)).float()
    parts = out.split(len(x))
    return torch.stack([torch.flip(part, dims) if dims else part for part, dims in zip(parts, flips)])


def flip_average(net: nn.Module, x: torch.Tensor, n_flips: int = 4,
                 memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """``net``'s output averaged over the first ``n_flips`` of :data:`FLIPS` of its input ``(N, C, H, W)``.

    See :func:`flip_outputs`; ``n_flips=1`` is ``net(x)``.
    """
    return flip_outputs(net, x, n_flips, memory_format).mean(dim=0)
