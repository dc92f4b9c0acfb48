"""A wall-clock-budgeted training loop shared by the ``detector`` and ``vae`` trainings.

The caller supplies one optimisation step and a validation function; the loop
runs the cosine learning-rate schedule, keeps an exponential moving average of
the weights (the shipped weights), writes a validation line to
``history.jsonl`` every ``validate_minutes`` and at the end, and a resumable
checkpoint every ``checkpoint_minutes``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..deblenders.checkpoints import load_training_checkpoint
from .peeling import EMA, cosine_lr


@dataclass
class Phase:
    """One budgeted phase: a network, its optimiser, one step, and a validation function.

    Attributes
    ----------
    name : str
        Phase name (history lines and checkpoint keys).
    net : torch.nn.Module
        The trained network (its EMA is what the phase returns).
    optimizer : torch.optim.Optimizer
        Optimiser of ``net``.
    step : callable
        ``step() -> torch.Tensor``: one batch's loss (the loop back-propagates it).
    validate : callable
        ``validate(net) -> dict`` metrics of an (EMA) network.
    lr : float
        Peak learning rate.
    seconds : float
        Wall-clock budget.
    ema_decay : float
        Decay of the weight average.
    """

    name: str
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[], torch.Tensor]
    validate: Callable[[torch.nn.Module], dict[str, float]]
    lr: float
    seconds: float
    ema_decay: float = 0.998


def run_phase(phase: Phase, out: Path, log: Callable[[str], None] = print,
              progress: Callable[[float], None] | None = None, validate_minutes: float = 2.0,
              checkpoint_minutes: float = 5.0, resume: bool = False) -> torch.nn.Module:
    """Train ``phase.net`` for ``phase.seconds``; returns a copy holding the EMA weights.

    Writes ``out / f"{phase.name}_checkpoint.pt"`` (resumable) and appends to
    ``out / "history.jsonl"``. With ``resume``, continues from the checkpoint
    (a finished phase is not run again).
    """
    import copy

    net, opt = phase.net, phase.optimizer
    ema = EMA(net, decay=phase.ema_decay)
    checkpoint_path = out / f"{phase.name}_checkpoint.pt"
    elapsed_before, step = 0.0, 0
    if resume and checkpoint_path.exists():
        state = load_training_checkpoint(checkpoint_path, {"live", "opt", "ema", "elapsed", "step"})
        net.load_state_dict(state["live"])
        opt.load_state_dict(state["opt"])
        ema.shadow = state["ema"]
        elapsed_before, step = state["elapsed"], state["step"]
        log(f"{phase.name}: resumed at step {step}, {elapsed_before / 60:.1f} min")
    start = time.perf_counter() - elapsed_before
    last_validation = last_checkpoint = time.perf_counter()

    def elapsed() -> float:
        return time.perf_counter() - start

    def averaged() -> torch.nn.Module:
        model = copy.deepcopy(net)
        model.load_state_dict(ema.shadow)
        return model.eval()

    def checkpoint() -> None:
        state = {"live": net.state_dict(), "opt": opt.state_dict(), "ema": ema.shadow,
                 "elapsed": elapsed(), "step": step}
        tmp = checkpoint_path.with_name(checkpoint_path.name + ".part")
        torch.save(state, tmp)
        tmp.replace(checkpoint_path)

    def validation_line(loss: float) -> None:
        metrics = {"phase": phase.name, "step": step, "minutes": round(elapsed() / 60, 2),
                   "loss": loss if np.isfinite(loss) else None, **phase.validate(averaged())}
        with open(out / "history.jsonl", "a") as history:
            history.write(json.dumps(metrics) + "\n")
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))

    net.train()
    loss = float("nan")
    while (now := elapsed()) < phase.seconds:
        for group in opt.param_groups:
            group["lr"] = phase.lr * cosine_lr(1.0, now / phase.seconds)
        total = phase.step()
        opt.zero_grad()
        total.backward()
        opt.step()
        ema.decay = min(phase.ema_decay, (1 + step) / (10 + step))  # warm-up: short runs ship trained weights too
        ema.update(net)
        loss = float(total.detach())
        step += 1
        if progress is not None:
            progress(min(elapsed() / phase.seconds, 1.0))
        if time.perf_counter() - last_validation > validate_minutes * 60:
            validation_line(loss)
            last_validation = time.perf_counter()
        if time.perf_counter() - last_checkpoint > checkpoint_minutes * 60:
            checkpoint()
            last_checkpoint = time.perf_counter()
    validation_line(loss)
    checkpoint()
    log(f"{phase.name}: {step} steps in {elapsed() / 60:.1f} min")
    return averaged()


def save_weights(path: Path, payload: dict[str, Any]) -> Path:
    """Write a weights file atomically (``payload`` of tensors and plain values)."""
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path
