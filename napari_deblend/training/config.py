"""The options every ``napari-deblend train MODEL`` run shares (each model's config adds its own)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    """Options common to all models' training.

    Attributes
    ----------
    preset : str
        Survey preset of the simulations.
    minutes : float
        Wall-clock training budget.
    stamp_size : int
        Side of the simulated stamps, pixels.
    n_train, n_val : int
        Simulated training stamps (cached) and validation stamps.
    batch_size : int
        Stamps per step.
    lr : float
        Peak learning rate.
    seed : int
        Seed of the batches (the simulations have their own).
    device : str
        ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"``.
    workers : int
        Simulation worker processes.
    checkpoint_minutes : float
        Time between resumable checkpoints.
    threads : int
        torch CPU threads (0: torch's default).
    init : str or None
        Warm start (fine-tune) from these weights of the same model.
    morphology : str
        Morphology mix of the simulated galaxies (``realistic``, ``parametric`` or family weights;
        see :mod:`napari_deblend.training.data_mix`).
    real_pool : str or None
        Real-galaxy pool whose ``train`` split joins the mix (``validation`` for the run's validation).
    real_weight : float
        Share of pool galaxies in the mix (with ``real_pool``).
    """

    preset: str = "lsst-i"
    minutes: float = 20.0
    stamp_size: int = 48
    n_train: int = 60_000
    n_val: int = 400
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    workers: int = 2
    checkpoint_minutes: float = 5.0
    threads: int = 0
    init: str | None = None
    morphology: str = "realistic"
    real_pool: str | None = None
    real_weight: float = 0.3
