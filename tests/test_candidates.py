"""Which detections are offered to the deblender: the point-source footprint criterion and the numbering."""

from __future__ import annotations

import numpy as np
import pytest

from napari_deblend.blends import find_blends
from napari_deblend.candidates import (
    extended_detections,
    find_candidates,
    point_source_footprint,
    psf_fwhm_pixels,
)
from napari_deblend.detection import get_detection_preset, run_detection
from napari_deblend.errors import DeblendInputError
from napari_deblend.field import Field
from napari_deblend.presets import get_preset
from napari_deblend.simulate import simulate_field

LSST = get_preset("lsst-i")


def _kolmogorov_stars(n_side: int = 6, cell: int = 48, seed: int = 5) -> Field:
    """A grid of Kolmogorov point sources (the preset's PSF) of peak S/N 5 to 2000, with the preset's noise."""
    import galsim

    rng = np.random.default_rng(seed)
    psf = galsim.Kolmogorov(fwhm=LSST.psf_fwhm)
    image = np.zeros((n_side * cell, n_side * cell), np.float32)
    snrs = np.geomspace(5, 2000, n_side * n_side)
    for k, snr in enumerate(rng.permutation(snrs)):
        stamp = psf.drawImage(nx=cell, ny=cell, scale=LSST.pixel_scale, offset=tuple(rng.uniform(-0.5, 0.5, 2))).array
        y0, x0 = (k // n_side) * cell, (k % n_side) * cell
        image[y0:y0 + cell, x0:x0 + cell] += snr * LSST.background_sigma * stamp / stamp.max()
    image += rng.normal(0, LSST.background_sigma, image.shape).astype(np.float32)
    return Field(image[None], noise=np.array([LSST.background_sigma]))


def test_point_sources_are_not_offered_and_galaxies_are():
    detection = get_detection_preset("sextractor")
    fwhm = psf_fwhm_pixels(LSST)
    assert fwhm == pytest.approx(3.5)
    table = point_source_footprint(fwhm, detection)
    assert np.all(np.diff(table.peak_snr) > 0) and np.all(np.diff(table.npix) >= 0)
    # a bright point source has a large footprint (the Kolmogorov wings): no fixed area cut would do
    assert table.limit(300.0) > 150 and table.limit(5.0) < 40
    assert table.limit(1e5) > table.limit(5000.0)  # extrapolated, still growing

    stars = run_detection(_kolmogorov_stars())
    star_extended = extended_detections(stars.catalog, stars.detection_rms, fwhm, detection)
    assert len(stars.catalog) >= 34 and star_extended.mean() <= 0.1

    field, _ = simulate_field(384, seed=3)
    galaxies = run_detection(field)
    galaxy_extended = extended_detections(galaxies.catalog, galaxies.detection_rms, fwhm, detection)
    assert len(galaxies.catalog) >= 40 and galaxy_extended.mean() >= 0.8


def test_candidate_modes_and_numbering_after_the_blends():
    field, _ = simulate_field(384, seed=3)
    result = run_detection(field)
    cat = result.catalog
    blends = find_blends(cat, result.segmentation)
    kwargs = {"detection_rms": result.detection_rms, "fwhm_pixels": psf_fwhm_pixels(LSST),
              "detection": result.preset, "shape": field.shape}  # fmt: skip
    assert find_candidates(cat, blends, "blends", **kwargs) == []
    every = find_candidates(cat, blends, "all", **kwargs)
    extended = find_candidates(cat, blends, "extended", **kwargs)
    isolated = set(np.asarray(cat["id"])[np.asarray(cat["blend_id"]) == 0])
    assert {int(b.members[0]) for b in every} == isolated
    assert {int(b.members[0]) for b in extended} < isolated
    assert [b.id for b in every] == list(range(len(blends) + 1, len(blends) + 1 + len(every)))
    fluxes = [b.fluxes[0] for b in every]
    assert fluxes == sorted(fluxes, reverse=True) and all(b.n_members == 1 for b in every)
    with pytest.raises(DeblendInputError, match="candidates 'some'.*extended, all"):
        find_candidates(cat, blends, "some", **kwargs)
