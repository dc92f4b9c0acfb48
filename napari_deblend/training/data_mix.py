"""The simulated data a training run learns from: its morphology mix and real-galaxy pool.

Every ``napari-deblend train`` command takes ``--morphology`` (default
``realistic``: bulge + disk, Sérsic, knotty, spiral, barred, irregular,
lopsided, edge-on, tidal and compact galaxies and stars; ``parametric`` for
bulge + disk only), ``--real-pool DIR`` (a pool from ``napari-deblend
real-pool build``) and ``--real-weight`` (the share of the pool's galaxies in
the mix).  Training draws from the pool's ``train`` split, a run's own
validation from its ``validation`` split; the evaluation's realistic test set
alone uses ``test``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DeblendInputError

DEFAULT_REAL_WEIGHT = 0.3
"""Share of real-pool galaxies in the training mix when a pool is given."""


@dataclass(frozen=True)
class DataMix:
    """Morphology mix and real-galaxy pool of simulated training data.

    Attributes
    ----------
    morphology : str
        Mix name or ``"family=weight,..."`` (:func:`napari_deblend.simulate.parse_mix`).
    real_pool : str or None
        Real-galaxy pool directory.
    real_weight : float
        Share of pool galaxies in the mix (0-1), used with ``real_pool``.
    """

    morphology: str = "realistic"
    real_pool: str | None = None
    real_weight: float = DEFAULT_REAL_WEIGHT

    def weights(self) -> dict[str, float]:
        """The normalised family weights, the pool's share included."""
        from ..simulate import parse_mix

        mix = parse_mix(self.morphology)
        if not self.real_pool or "real" in mix:
            return mix
        if not 0.0 <= self.real_weight < 1.0:
            raise DeblendInputError(f"--real-weight {self.real_weight}: expected a share from 0 to below 1")
        scaled = {name: weight * (1.0 - self.real_weight) for name, weight in mix.items()}
        if self.real_weight > 0:
            scaled["real"] = self.real_weight
        return scaled

    def simulate_kwargs(self, split: str) -> dict[str, Any]:
        """Keyword arguments of ``simulate_blends`` for one split of the pool (``train`` or ``validation``)."""
        weights = self.weights()
        return {"morphology": weights, "real_pool": self.real_pool if "real" in weights else None,
                "real_split": split}

    def tag(self) -> str:
        """A short name of this mix for cache files (``parametric`` keeps the caches of earlier runs)."""
        weights = self.weights()
        if set(weights) == {"bulge_disk"}:
            return "parametric"
        text = repr(sorted(weights.items()))
        if "real" in weights:
            text += _pool_fingerprint(self.real_pool)
        return "mix" + hashlib.sha1(text.encode()).hexdigest()[:10]

    def describe(self) -> dict[str, Any]:
        """What a model card records of the data."""
        return {"morphology": self.morphology, "real_pool": self.real_pool,
                "real_weight": self.real_weight if self.real_pool else 0.0,
                "family_weights": {k: round(v, 4) for k, v in self.weights().items()}}


def data_mix(config: Any) -> DataMix:
    """The :class:`DataMix` of a training config (its ``morphology``, ``real_pool``, ``real_weight``)."""
    return DataMix(getattr(config, "morphology", "parametric") or "parametric", getattr(config, "real_pool", None),
                   float(getattr(config, "real_weight", DEFAULT_REAL_WEIGHT)))


def _pool_fingerprint(path: str | None) -> str:
    """Sizes and times of a pool's files: a cache made from another pool is not reused."""
    if not path:
        return ""
    folder = Path(path).expanduser()
    return ";".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{int(p.stat().st_mtime)}"
                    for p in sorted(folder.rglob("*.npz")))
