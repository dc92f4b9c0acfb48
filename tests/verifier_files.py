"""Split-verifier weights files for the tests: one with a verifier of other features, checks of a trained one."""

from __future__ import annotations

from pathlib import Path

import torch

from napari_deblend.deblenders.split_verifier import SplitVerifier


def with_other_verifier(weights: Path, n_features: int, out: Path) -> dict:
    """Write ``weights`` to ``out`` with a verifier that takes ``n_features``; return the checkpoint written."""
    checkpoint = torch.load(weights, weights_only=True)
    other = SplitVerifier(n_features=n_features, width=8, depth=1)
    checkpoint["split_verifier"], checkpoint["split_verifier_config"] = other.state_dict(), other.config
    torch.save(checkpoint, out)
    return checkpoint


def assert_only_a_verifier_added(weights: Path, shipped: Path, networks: tuple[str, ...], n_features: int) -> None:
    """The trained ``weights`` hold the ``shipped`` file's ``networks`` unchanged and a verifier of ``n_features``."""
    checkpoint = torch.load(weights, weights_only=True)
    original = torch.load(shipped, weights_only=True)
    for key in networks:
        assert all(torch.equal(checkpoint[key][k], original[key][k]) for k in original[key]), key
    assert checkpoint["split_verifier_config"]["n_features"] == n_features
