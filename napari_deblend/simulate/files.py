"""Blend sets and truth tables on disk: FITS blend files, ECSV truth catalogues."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DeblendInputError
from .blends import BlendSet
from .catalog import truth_table

if TYPE_CHECKING:
    from astropy.io import fits
    from astropy.table import Table

def write_blends(blendset: BlendSet, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a BlendSet to FITS: extensions BLENDS, COMPONENTS and TRUTH.

    Parameters
    ----------
    blendset : BlendSet
        The blends.
    path : str or path-like
        Output file.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The path written.
    """
    from astropy.io import fits

    path = Path(path)
    if path.exists() and not overwrite:
        raise DeblendInputError(f"output file {path} exists: pass overwrite=True (--overwrite) to replace it")
    primary = fits.PrimaryHDU()
    primary.header["PRESET"] = (blendset.preset, "survey preset")
    primary.header["NOISE"] = (blendset.noise_sigma, "background sigma per pixel, e-")
    primary.header["NSTAMPS"] = (len(blendset), "number of blend stamps")
    primary.header["BUNIT"] = "electron"
    images = fits.ImageHDU(blendset.images, name="BLENDS")
    components = fits.ImageHDU(blendset.components, name="COMPONENTS")
    for hdu in (images, components):
        hdu.header["PRESET"] = blendset.preset
        hdu.header["NOISE"] = blendset.noise_sigma
        hdu.header["BUNIT"] = "electron"
    table = _truth_hdu(blendset.truth)
    fits.HDUList([primary, images, components, table]).writeto(path, overwrite=overwrite)
    return path


def _truth_hdu(truth: Table) -> fits.BinTableHDU:
    """Truth as a FITS binary table named TRUTH; units FITS cannot parse go to TUNITn as text."""
    from astropy.io import fits
    from astropy.table import Table

    table = Table({name: np.asarray(truth[name]) for name in truth.colnames})
    hdu = fits.table_to_hdu(table)
    hdu.name = "TRUTH"
    for i, name in enumerate(table.colnames, start=1):
        unit = truth[name].unit
        if unit is not None:
            hdu.header[f"TUNIT{i}"] = unit.to_string()
    return hdu


def read_blends(path: str | os.PathLike) -> BlendSet:
    """Read a BlendSet written by :func:`write_blends`.

    Parameters
    ----------
    path : str or path-like
        FITS file.

    Returns
    -------
    BlendSet
    """
    from astropy import units as u
    from astropy.io import fits
    from astropy.table import Table

    path = Path(path)
    try:
        with fits.open(path) as hdul:
            header = hdul[0].header
            images = hdul["BLENDS"].data.astype(np.float32)
            components = hdul["COMPONENTS"].data.astype(np.float32)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", u.UnitsWarning)  # "electron" is not a FITS unit
                truth = Table.read(hdul["TRUTH"])
    except (OSError, KeyError) as exc:
        raise DeblendInputError(f"{path} is not a blend file with BLENDS, COMPONENTS and TRUTH: {exc}") from None
    truth = truth_table({name: np.asarray(truth[name]) for name in truth.colnames}, dict(truth.meta))
    truth["central"] = truth["central"].astype(bool)
    n_components = np.bincount(np.asarray(truth["stamp"], dtype=int), minlength=len(images))
    return BlendSet(images=images, components=components, n_components=n_components, truth=truth,
                    noise_sigma=float(header.get("NOISE", np.nan)), preset=str(header.get("PRESET", "")))


def write_truth(table: Table, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a truth table as ECSV (units and metadata kept).

    Parameters
    ----------
    table : astropy.table.Table
        Truth table from :func:`simulate_field` or a :class:`BlendSet`.
    path : str or path-like
        Output ``.ecsv`` file.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        The path written.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DeblendInputError(f"output file {path} exists: pass overwrite=True (--overwrite) to replace it")
    table.write(path, format="ascii.ecsv", overwrite=overwrite)
    return path


def concatenate_blends(sets: Sequence[BlendSet]) -> BlendSet:
    """Join BlendSets of one preset and stamp size (stamp indices renumbered).

    Parameters
    ----------
    sets : sequence of BlendSet
        The sets to join, in order.

    Returns
    -------
    BlendSet
    """
    from astropy.table import vstack

    if not sets:
        raise DeblendInputError("concatenate_blends needs at least one BlendSet")
    k_max = max(s.components.shape[1] for s in sets)
    components, tables, offset = [], [], 0
    for s in sets:
        pad = k_max - s.components.shape[1]
        components.append(np.pad(s.components, ((0, 0), (0, pad), (0, 0), (0, 0), (0, 0))))
        table = s.truth.copy()
        table["stamp"] = np.asarray(table["stamp"]) + offset
        tables.append(table)
        offset += len(s)
    return replace(sets[0], images=np.concatenate([s.images for s in sets]),
                   components=np.concatenate(components),
                   n_components=np.concatenate([s.n_components for s in sets]),
                   truth=vstack(tables, metadata_conflicts="silent"))
