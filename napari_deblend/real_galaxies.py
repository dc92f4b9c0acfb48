"""Real galaxies as sources of artificial blends (the Boucaud et al. 2020 recipe with labelled stamps).

``napari-deblend export-training`` writes the clean isolated galaxies of
labelled fields as FITS cut-outs; :func:`load_real_galaxies` reads them back
and :func:`mix_real_galaxies` swaps a chosen fraction of the parametric
galaxies of a training set for them.

What happens to a real stamp (:func:`prepare_stamp`):

1. one band is taken (the preset's band when the cut-out has it, else the first);
2. the local background (median of the cut-out's 3-pixel border) is subtracted
   and the noise sigma measured there (1.4826 × MAD);
3. the galaxy's footprint is the 8-connected region holding the brightest
   pixel near the centre of the cut-out smoothed by a 1-pixel Gaussian, above
   1.5 sigma of the smoothed noise, dilated by 2 pixels; pixels outside it, and
   detected neighbours, are set to 0.

Inside the footprint the real noise is **kept**, as Boucaud et al. kept the
noise of their CANDELS stamps: the network sees real, not idealised, light
profiles, at the price of targets that carry the field's noise there (when a
galaxy is made fainter to match the training magnitudes, its noise shrinks with
it; galaxies are only made brighter when no brighter real galaxy is available).

In a training stamp, each parametric galaxy is replaced with probability
``fraction`` by a real one: random rotation by a multiple of 90° and flip,
flux rescaled to the parametric galaxy's flux (so the magnitude distribution of
the preset is kept), centred on the parametric galaxy's centroid (so the
separations are kept). Components are re-sorted brightest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import DeblendInputError
from .measurements import centroid

BORDER = 3  # pixels of the cut-out border used for the local background and noise
FOOTPRINT_SIGMAS = 1.5
FOOTPRINT_DILATION = 2


@dataclass
class RealGalaxies:
    """Prepared real galaxy images.

    Attributes
    ----------
    images : list of numpy.ndarray
        ``(h, w)`` float32 images, background-subtracted, zero outside the
        footprint, centred on their flux-weighted centroid (odd sides).
    fluxes : numpy.ndarray
        ``(N,)`` sum of each image, electrons.
    noise : numpy.ndarray
        ``(N,)`` noise sigma measured on each cut-out's border.
    files : list of str
        Source FITS file of each image.
    """

    images: list[np.ndarray]
    fluxes: np.ndarray
    noise: np.ndarray
    files: list[str]

    def __len__(self) -> int:
        return len(self.images)


def prepare_stamp(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, float] | None:
    """Background-subtract, mask to the central galaxy's footprint and centre one cut-out.

    Parameters
    ----------
    image : numpy.ndarray
        ``(H, W)`` pixels of one band.
    mask : numpy.ndarray, optional
        ``(H, W)`` bool, True for padded or invalid pixels.

    Returns
    -------
    tuple or None
        ``(image, noise_sigma)`` with the image centred on the galaxy; None when
        no galaxy stands out of the noise.
    """
    data = np.asarray(image, np.float64).copy()
    bad = np.zeros(data.shape, bool) if mask is None else np.asarray(mask, bool)
    data[bad] = np.nan
    border = np.ones(data.shape, bool)
    border[BORDER:-BORDER, BORDER:-BORDER] = False
    ring = data[border & np.isfinite(data)]
    if ring.size < 8:
        return None
    background = float(np.median(ring))
    sigma = float(1.4826 * np.median(np.abs(ring - background)))
    data = np.nan_to_num(data - background, nan=0.0)
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(np.std(ring)) or 1.0
    smooth = ndimage.gaussian_filter(data, 1.0)
    above = smooth > FOOTPRINT_SIGMAS * sigma / (
        2.0 * np.sqrt(np.pi)
    )  # sigma of noise smoothed by a 1-px Gaussian
    regions, n = ndimage.label(above, structure=np.ones((3, 3)))
    if n == 0:
        return None
    h, w = data.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    yy, xx = np.mgrid[:h, :w]
    central = np.hypot(yy - cy, xx - cx) <= max(3.0, 0.25 * min(h, w))
    candidates = np.where(central & (regions > 0), smooth, -np.inf)
    if not np.isfinite(candidates.max()):
        return None
    peak = np.unravel_index(np.argmax(candidates), data.shape)
    footprint = ndimage.binary_dilation(regions == regions[peak], iterations=FOOTPRINT_DILATION)
    galaxy = np.where(footprint & ~bad, data, 0.0)
    gy, gx = centroid(galaxy)
    if not np.isfinite(gy):
        return None
    return _centre(galaxy, gy, gx).astype(np.float32), sigma


def _centre(image: np.ndarray, cy: float, cx: float) -> np.ndarray:
    """The image shifted (whole pixels) so that ``(cy, cx)`` lands on the centre of an odd-sided square."""
    h, w = image.shape
    half = int(np.ceil(max(cy, h - 1 - cy, cx, w - 1 - cx)))
    out = np.zeros((2 * half + 1, 2 * half + 1), image.dtype)
    oy, ox = half - int(round(cy)), half - int(round(cx))
    ys, xs = slice(max(oy, 0), min(oy + h, out.shape[0])), slice(max(ox, 0), min(ox + w, out.shape[1]))
    out[ys, xs] = image[ys.start - oy : ys.stop - oy, xs.start - ox : xs.stop - ox]
    return out


def load_real_galaxies(
    directory: str | Path, band: str | int | None = None, preset: str = "lsst-i", min_snr: float = 10.0
) -> RealGalaxies:
    """Read and prepare the clean isolated galaxies of an ``export-training`` folder.

    Parameters
    ----------
    directory : str or Path
        Folder holding ``index.ecsv`` and ``isolated/*.fits``.
    band : str or int, optional
        Band to use (name or plane index); default: the preset's band when present, else plane 0.
    preset : str
        Survey preset (its band name).
    min_snr : float
        Skip galaxies whose flux is below ``min_snr`` × noise × sqrt(footprint area).

    Returns
    -------
    RealGalaxies

    Raises
    ------
    DeblendInputError
        If the folder has no index, or no usable isolated galaxy.
    """
    from astropy.io import fits
    from astropy.table import Table

    from .presets import get_preset

    folder = Path(directory)
    index_path = folder / "index.ecsv"
    if not index_path.exists():
        raise DeblendInputError(
            f"--real-galaxies {folder}: no index.ecsv there; make it with "
            "`napari-deblend export-training --labels DB --out DIR`"
        )
    index = Table.read(index_path, format="ascii.ecsv")
    rows = [row for row in index if str(row["kind"]) == "isolated" and str(row["verdict"]) == "clean"]
    if not rows:
        raise DeblendInputError(
            f"--real-galaxies {folder}: index.ecsv lists no clean isolated galaxy "
            "(label isolated galaxies 'clean' in the Label panel, then export again)"
        )
    preset_band = get_preset(preset).band
    images, fluxes, noise, files = [], [], [], []
    for row in rows:
        path = folder / str(row["file"])
        with fits.open(path) as hdul:
            cube = np.asarray(hdul[0].data, np.float32)
            mask = np.asarray(hdul["MASK"].data, bool) if "MASK" in hdul else None
            names = [hdul[0].header.get(f"BAND{i + 1}", str(i)) for i in range(cube.shape[0])]
        plane = _band_index(band, names, preset_band, path)
        prepared = prepare_stamp(cube[plane], None if mask is None else mask[plane])
        if prepared is None:
            continue
        image, sigma = prepared
        flux = float(image.sum())
        if flux < min_snr * sigma * np.sqrt(max((image != 0).sum(), 1)):
            continue
        images.append(image)
        fluxes.append(flux)
        noise.append(sigma)
        files.append(str(path))
    if not images:
        raise DeblendInputError(
            f"--real-galaxies {folder}: none of the {len(rows)} clean isolated galaxies "
            f"stands {min_snr:g} sigma above the noise"
        )
    return RealGalaxies(images, np.asarray(fluxes), np.asarray(noise), files)


def _band_index(band: str | int | None, names: list[str], preset_band: str, path: Path) -> int:
    if band is None:
        return names.index(preset_band) if preset_band in names else 0
    if isinstance(band, int) or str(band).isdigit():
        index = int(band)
        if not 0 <= index < len(names):
            raise DeblendInputError(f"{path}: band {band} out of range (planes {', '.join(names)})")
        return index
    if band not in names:
        raise DeblendInputError(f"{path}: no band {band!r} (bands: {', '.join(names)})")
    return names.index(band)


def place_galaxy(
    image: np.ndarray, flux: float, center: tuple[float, float], size: int, rng: np.random.Generator
) -> np.ndarray:
    """A prepared real galaxy rotated/flipped at random, scaled to ``flux`` and centred at ``center`` in a ``size`` stamp."""
    turned = np.rot90(image, k=int(rng.integers(4)))
    if rng.random() < 0.5:
        turned = turned[:, ::-1]
    total = float(turned.sum())
    scaled = turned * np.float32(flux / total) if total > 0 else turned
    out = np.zeros((size, size), np.float32)
    half = scaled.shape[0] // 2
    oy, ox = int(round(center[0])) - half, int(round(center[1])) - half
    ys = slice(max(oy, 0), min(oy + scaled.shape[0], size))
    xs = slice(max(ox, 0), min(ox + scaled.shape[1], size))
    if ys.start < ys.stop and xs.start < xs.stop:
        out[ys, xs] = scaled[ys.start - oy : ys.stop - oy, xs.start - ox : xs.stop - ox]
    return out


def mix_real_galaxies(
    data: dict[str, np.ndarray], galaxies: RealGalaxies, fraction: float, seed: int = 0
) -> tuple[dict[str, np.ndarray], int]:
    """Replace a fraction of the parametric galaxies of a training set by real ones.

    Parameters
    ----------
    data : dict
        ``components`` ``(n, K, S, S)`` noiseless galaxies, brightest first, and
        ``n_components`` ``(n,)`` (the cached training data of
        :func:`~napari_deblend.training.peeling.load_or_simulate`).
    galaxies : RealGalaxies
        From :func:`load_real_galaxies`.
    fraction : float
        Probability that a galaxy is replaced (0 to 1).
    seed : int
        Random seed.

    Returns
    -------
    tuple
        The new data (a copy; components re-sorted brightest first) and the number of galaxies replaced.
    """
    if not 0.0 <= fraction <= 1.0:
        raise DeblendInputError(f"--real-fraction {fraction}: expected a number between 0 and 1")
    if not len(galaxies):
        raise DeblendInputError("no real galaxy to mix in")
    from .training.unet import component_stats

    rng = np.random.default_rng([seed, 7_321])
    components = np.array(data["components"], np.float32, copy=True)
    counts = np.asarray(data["n_components"])
    n, k_max, size, _ = components.shape
    flux, centroid = component_stats(components)
    order = np.argsort(galaxies.fluxes)
    sorted_fluxes = galaxies.fluxes[order]
    replaced = 0
    for i in range(n):
        changed = False
        for j in range(int(counts[i])):
            if rng.random() >= fraction or flux[i, j] <= 0:
                continue
            # prefer a real galaxy at least as bright as the one it replaces (scaling down shrinks its noise)
            first = int(np.searchsorted(sorted_fluxes, flux[i, j]))
            pick = order[rng.integers(first, len(order))] if first < len(order) else order[-1]
            components[i, j] = place_galaxy(
                galaxies.images[pick], float(flux[i, j]), tuple(centroid[i, j]), size, rng
            )
            replaced += 1
            changed = True
        if changed:
            k = int(counts[i])
            brightness = components[i, :k].sum(axis=(1, 2))
            components[i, :k] = components[i, :k][np.argsort(-brightness, kind="stable")]
    return {**data, "components": components, "n_components": counts.copy()}, replaced
