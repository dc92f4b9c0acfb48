"""The split register: which split each known real galaxy belongs to, whatever the builder keeps.

A seeded permutation of galaxy ids (:func:`~napari_deblend.realpool.pool.split_by_galaxy`)
reshuffles every galaxy's split as soon as the builder keeps one galaxy more
or less, so a pool rebuilt after a change of the selection would put
galaxies the shipped networks learned from into its test split. The
register ships with the package (``split_register.json``): for every galaxy
of the pool the shipped weights were trained on, its source-table entry
(``origin``), its position in the source image and its split. Positions,
not pixels: nothing cut from the images is in it.

A build with the register's seed and fractions gives every galaxy found
within :data:`MATCH_RADIUS` pixels of a registered one of the same origin
that galaxy's split; galaxies the register does not know are split among
themselves by the seeded permutation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import DeblendInputError

REGISTER_FILE = Path(__file__).with_name("split_register.json")
MATCH_RADIUS = 1.5
"""Largest distance (source-image pixels) between a galaxy and its registered position."""

_SPLITS = ("train", "validation", "test")


def load_split_register(path: str | Path | None = None) -> dict:
    """The register as written by :func:`write_split_register` (default: the shipped one).

    Parameters
    ----------
    path : str or Path, optional
        A register file; default :data:`REGISTER_FILE`.

    Returns
    -------
    dict
        ``seed``, ``fractions`` (train, validation, test) and ``galaxies``:
        ``{origin: [[x, y, split index], ...]}``.
    """
    path = Path(path) if path is not None else REGISTER_FILE
    try:
        register = json.loads(path.read_text())
        galaxies = {str(origin): np.asarray(rows, dtype=float).reshape(-1, 3)
                    for origin, rows in register["galaxies"].items()}
        return {"seed": int(register["seed"]), "fractions": tuple(float(f) for f in register["fractions"]),
                "galaxies": galaxies}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DeblendInputError(f"{path}: not a readable split register ({error})") from None


def apply_split_register(assignment: np.ndarray, galaxy_id: np.ndarray, origin: np.ndarray, x: np.ndarray,
                         y: np.ndarray, register: dict) -> tuple[np.ndarray, int]:
    """Give every galaxy the register knows its registered split.

    Parameters
    ----------
    assignment : ndarray
        Split index (0 train, 1 validation, 2 test) of every stamp, as drawn
        for galaxies the register does not know.
    galaxy_id, origin, x, y : ndarray
        Per stamp: galaxy id, source-table entry and position in the source image.
    register : dict
        From :func:`load_split_register`.

    Returns
    -------
    assignment : ndarray
        The new split indices.
    n_registered : int
        How many galaxies took their split from the register.
    """
    out = np.asarray(assignment).copy()
    galaxy_id = np.asarray(galaxy_id)
    n_registered = 0
    for galaxy in np.unique(galaxy_id):
        rows = np.flatnonzero(galaxy_id == galaxy)
        known = register["galaxies"].get(str(origin[rows[0]]))
        if known is None or not len(known):
            continue
        distance = np.hypot(known[:, 0] - float(x[rows[0]]), known[:, 1] - float(y[rows[0]]))
        nearest = int(np.argmin(distance))
        if distance[nearest] <= MATCH_RADIUS:
            out[rows] = int(known[nearest, 2])
            n_registered += 1
    return out, n_registered


def split_register_of(pool_dir: str | Path, preset: str = "lsst-i") -> dict:
    """The register of a built pool: every galaxy's origin, position and split (JSON-ready).

    Parameters
    ----------
    pool_dir : str or Path
        Output root of ``napari-deblend real-pool build``.
    preset : str
        The preset folder to read.

    Returns
    -------
    dict
        ``seed``, ``fractions`` and ``galaxies`` as :func:`load_split_register` reads them.
    """
    root = Path(pool_dir) / preset
    manifest = json.loads((root / "pool.json").read_text())
    galaxies: dict[str, list[list[float]]] = {}
    for index, name in enumerate(_SPLITS):
        with np.load(root / f"{name}.npz") as data:
            _, first = np.unique(data["galaxy_id"], return_index=True)
            for row in first:
                galaxies.setdefault(str(data["origin"][row]), []).append(
                    [round(float(data["x"][row]), 2), round(float(data["y"][row]), 2), index])
    fractions = manifest["split"]["fractions"]
    return {"seed": int(manifest["split"]["seed"]), "fractions": [fractions[name] for name in _SPLITS],
            "galaxies": {origin: sorted(rows) for origin, rows in sorted(galaxies.items())}}


def write_split_register(pool_dir: str | Path, path: str | Path | None = None, preset: str = "lsst-i") -> Path:
    """Write the register of a built pool (default: over the shipped one) and return its path."""
    path = Path(path) if path is not None else REGISTER_FILE
    register = split_register_of(pool_dir, preset)
    lines = [f'  "{origin}": {json.dumps(rows)}' for origin, rows in register["galaxies"].items()]
    body = ",\n".join(lines)
    path.write_text(f'{{\n "seed": {register["seed"]},\n "fractions": {json.dumps(register["fractions"])},\n'
                    f' "galaxies": {{\n{body}\n }}\n}}\n')
    return path


def uses_register(register: dict, seed: int, fractions: tuple[float, float, float]) -> bool:
    """Whether a build with this seed and these fractions follows the register (the register's own)."""
    return int(seed) == register["seed"] and np.allclose(fractions, register["fractions"])
