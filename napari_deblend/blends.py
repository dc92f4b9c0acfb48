"""Group detections into blends, and cut stamps around them.

Two detections belong to the same blend when their segmentation footprints
touch at the detection threshold (8-connected), or when their Kron ellipses
overlap.  Groups are the connected components of that relation; a group of
two or more detections is a :class:`Blend`.

Positions are ``(y, x)`` pairs, 0-based, in the numpy convention (row, column).
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np
from astropy.table import Table
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from .catalog_photometry import KRON_APERTURE_SCALE, KRON_MIN_RADIUS, catalog_zero_point
from .errors import DeblendInputError
from .field import magnitude

REQUIRED_COLUMNS = ("id", "x", "y", "a", "b", "theta", "x2", "y2", "xy", "flux_auto")


@dataclass
class Blend:
    """A group of overlapping detections.

    Attributes
    ----------
    id : int
        Blend number, 1-based, brightest blends first.
    members : numpy.ndarray
        Catalogue ``id`` of each member, brightest first.
    bbox : tuple of int
        ``(ymin, ymax, xmin, xmax)`` with exclusive maxima, covering the
        members' footprints and Kron ellipses, clipped to the image.
    positions : numpy.ndarray
        ``(K, 2)`` member positions ``(y, x)`` in field pixels.
    fluxes : numpy.ndarray
        ``(K,)`` members' ``flux_auto``.
    blendedness : float
        The largest member blendedness: ``1 - <g_i, g_i> / <g_i, sum_j g_j>``
        with ``g`` the members' elliptical Gaussian profiles from their second
        moments (0: isolated; 0.5: two identical sources on top of each other).
    magnitude : float
        Magnitude of the total ``flux_auto`` of the members.
    """

    id: int
    members: np.ndarray
    bbox: tuple[int, int, int, int]
    positions: np.ndarray
    fluxes: np.ndarray
    blendedness: float
    magnitude: float = float("nan")
    member_blendedness: np.ndarray = dc_field(default_factory=lambda: np.zeros(0))

    @property
    def n_members(self) -> int:
        """Number of detections in the blend."""
        return len(self.members)

    @property
    def size(self) -> int:
        """Larger side of the bounding box, pixels."""
        ymin, ymax, xmin, xmax = self.bbox
        return max(ymax - ymin, xmax - xmin)

    @property
    def center(self) -> tuple[float, float]:
        """Centre ``(y, x)`` of the bounding box."""
        ymin, ymax, xmin, xmax = self.bbox
        return (ymin + ymax - 1) / 2.0, (xmin + xmax - 1) / 2.0


def _check_catalog(cat: Table, segmentation: np.ndarray | None) -> None:
    if not isinstance(cat, Table):
        raise DeblendInputError(f"find_blends(cat): got {type(cat).__name__}: expected the astropy Table of "
                                "napari_deblend.detect")
    missing = [c for c in REQUIRED_COLUMNS if c not in cat.colnames]
    if missing:
        raise DeblendInputError(
            f"catalogue lacks column(s) {', '.join(missing)}: expected the output of napari_deblend.detect"
        )
    if segmentation is not None and np.ndim(segmentation) != 2:
        raise DeblendInputError(
            f"segmentation map has shape {np.shape(segmentation)}: expected a 2-D (H, W) label image"
        )
    for name in ("x", "y"):  # NaN positions would group nothing, or everything
        values = np.asarray(cat[name], float)
        if not np.isfinite(values).all():
            raise DeblendInputError(f"catalogue column {name} holds {int((~np.isfinite(values)).sum())} NaN/inf "
                                    "position(s): expected finite pixel positions")


def touching_pairs(segmentation: np.ndarray) -> np.ndarray:
    """Pairs of segmentation labels whose footprints touch (8-connected).

    Returns
    -------
    numpy.ndarray
        ``(P, 2)`` int array of label pairs ``(i, j)`` with ``0 < i < j``.
    """
    seg = np.asarray(segmentation)
    pairs = []
    for a, b in (
        (seg[:, :-1], seg[:, 1:]),
        (seg[:-1, :], seg[1:, :]),
        (seg[:-1, :-1], seg[1:, 1:]),
        (seg[:-1, 1:], seg[1:, :-1]),
    ):
        touch = (a != b) & (a > 0) & (b > 0)
        if touch.any():
            pairs.append(np.stack([a[touch], b[touch]], axis=1))
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    p = np.sort(np.concatenate(pairs), axis=1)
    return np.unique(p, axis=0).astype(np.int64)


def kron_axes(cat: Table) -> tuple[np.ndarray, np.ndarray]:
    """Semi-axes (pixels) of the Kron apertures: ``max(2.5 r_kron, 3.5) * (a, b)``."""
    kron = np.asarray(cat["kron_radius"], float) if "kron_radius" in cat.colnames else np.full(len(cat), np.nan)
    kron = np.where(np.isfinite(kron) & (kron > 0), kron, KRON_MIN_RADIUS / KRON_APERTURE_SCALE)
    r = np.maximum(KRON_APERTURE_SCALE * kron, KRON_MIN_RADIUS)
    return r * np.asarray(cat["a"], float), r * np.asarray(cat["b"], float)


def _ellipse_points(x, y, a, b, theta, n=32) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ct, st = np.cos(theta), np.sin(theta)
    px = x + a * np.cos(t) * ct - b * np.sin(t) * st
    py = y + a * np.cos(t) * st + b * np.sin(t) * ct
    return np.stack([px, py], axis=1)


def _inside_ellipse(points: np.ndarray, x, y, a, b, theta) -> np.ndarray:
    dx, dy = points[:, 0] - x, points[:, 1] - y
    ct, st = np.cos(theta), np.sin(theta)
    u = (dx * ct + dy * st) / max(a, 1e-9)
    v = (-dx * st + dy * ct) / max(b, 1e-9)
    return u * u + v * v <= 1.0


def ellipses_overlap(e1: tuple, e2: tuple) -> bool:
    """Whether two ellipses ``(x, y, a, b, theta)`` overlap (boundary sampled at 32 points, centres tested)."""
    if _inside_ellipse(np.array([[e1[0], e1[1]]]), *e2)[0] or _inside_ellipse(np.array([[e2[0], e2[1]]]), *e1)[0]:
        return True
    return bool(_inside_ellipse(_ellipse_points(*e1), *e2).any() or _inside_ellipse(_ellipse_points(*e2), *e1).any())


def kron_overlap_pairs(cat: Table) -> np.ndarray:
    """Pairs of catalogue ``id`` whose Kron ellipses overlap; ``(P, 2)`` int array."""
    if len(cat) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    x, y = np.asarray(cat["x"], float), np.asarray(cat["y"], float)
    ka, kb = kron_axes(cat)
    theta = np.asarray(cat["theta"], float)
    ids = np.asarray(cat["id"], np.int64)
    tree = cKDTree(np.stack([x, y], axis=1))
    candidates = tree.query_pairs(r=2 * float(ka.max()), output_type="ndarray")
    out = []
    for i, j in candidates:
        if np.hypot(x[i] - x[j], y[i] - y[j]) > ka[i] + ka[j]:
            continue
        if ellipses_overlap((x[i], y[i], ka[i], kb[i], theta[i]), (x[j], y[j], ka[j], kb[j], theta[j])):
            out.append((ids[i], ids[j]))
    return np.array(out, dtype=np.int64).reshape(-1, 2)


def gaussian_blendedness(cat: Table, rows: np.ndarray) -> np.ndarray:
    """Blendedness of each detection in ``rows`` among the others in ``rows``.

    Each source is an elliptical Gaussian of its flux and isophotal second
    moments; ``beta_i = 1 - <g_i, g_i> / <g_i, sum_j g_j>``, using the
    analytic overlap of two Gaussians ``F_i F_j N(mu_i - mu_j; 0, S_i + S_j)``.
    """
    flux = np.maximum(np.asarray(cat["flux_auto"], float)[rows], 1e-12)
    mu = np.stack([np.asarray(cat["x"], float)[rows], np.asarray(cat["y"], float)[rows]], axis=1)
    x2, y2, xy = (np.asarray(cat[c], float)[rows] for c in ("x2", "y2", "xy"))
    cov = np.stack([np.stack([x2, xy], -1), np.stack([xy, y2], -1)], -2)
    cov = cov + np.eye(2) * 0.25  # regularise single-pixel sources
    s = cov[:, None] + cov[None, :]
    d = mu[:, None] - mu[None, :]
    inv = np.linalg.inv(s)
    quad = np.einsum("ijk,ijkl,ijl->ij", d, inv, d)
    overlap = np.exp(-0.5 * quad) / (2 * np.pi * np.sqrt(np.linalg.det(s)))
    overlap *= flux[:, None] * flux[None, :]
    return 1.0 - np.diag(overlap) / overlap.sum(axis=1)


def _bbox(cat: Table, rows: np.ndarray, ka: np.ndarray, shape: tuple[int, int] | None) -> tuple[int, int, int, int]:
    x, y = np.asarray(cat["x"], float)[rows], np.asarray(cat["y"], float)[rows]
    r = ka[rows]
    ymin = np.floor(min((y - r).min(), np.min(cat["ymin"][rows]) if "ymin" in cat.colnames else np.inf))
    xmin = np.floor(min((x - r).min(), np.min(cat["xmin"][rows]) if "xmin" in cat.colnames else np.inf))
    ymax = np.ceil(max((y + r).max(), np.max(cat["ymax"][rows]) if "ymax" in cat.colnames else -np.inf)) + 1
    xmax = np.ceil(max((x + r).max(), np.max(cat["xmax"][rows]) if "xmax" in cat.colnames else -np.inf)) + 1
    if shape is not None:
        ymin, xmin = max(ymin, 0), max(xmin, 0)
        ymax, xmax = min(ymax, shape[0]), min(xmax, shape[1])
    return int(ymin), int(ymax), int(xmin), int(xmax)


def find_blends(
    cat: Table,
    segmentation: np.ndarray | None = None,
    *,
    kron_overlap: bool = True,
    zero_point: float | None = None,
    exposure: float | None = None,
) -> list[Blend]:
    """Group detections into blends.

    Parameters
    ----------
    cat : astropy.table.Table
        Catalogue from :func:`~napari_deblend.detect`. Its ``blend_id``
        column is set in place (0 for isolated sources) and ``blendedness``
        added, so the catalogue and the blends stay consistent.
    segmentation : numpy.ndarray, optional
        The segmentation map of the same detection; footprints that touch
        make a blend. Without it only Kron-ellipse overlap is used.
    kron_overlap : bool
        Also group detections whose Kron ellipses overlap.
    zero_point : float, optional
        AB magnitude of one image unit, for the blend magnitude (default: the
        catalogue's ``mag_zero_point``, see
        :func:`~napari_deblend.detection.catalog_zero_point`).
    exposure : float, optional
        With ``zero_point``: it is per second, for an image of this exposure.

    Returns
    -------
    list of Blend
        Groups of two or more detections, brightest first (by total flux).
    """
    _check_catalog(cat, segmentation)
    n = len(cat)
    cat["blend_id"] = np.zeros(n, dtype=np.int32)
    cat["blendedness"] = np.zeros(n, dtype=float)
    if n < 2:
        return []
    ids = np.asarray(cat["id"], np.int64)
    index_of = np.full(ids.max() + 1, -1, dtype=np.int64)
    index_of[ids] = np.arange(n)
    pair_sets = []
    if segmentation is not None:
        pair_sets.append(touching_pairs(segmentation))
    if kron_overlap:
        pair_sets.append(kron_overlap_pairs(cat))
    pairs = np.concatenate(pair_sets) if pair_sets else np.zeros((0, 2), np.int64)
    pairs = pairs[(pairs.max(axis=1) < len(index_of))] if len(pairs) else pairs
    rows_i, rows_j = index_of[pairs[:, 0]], index_of[pairs[:, 1]]
    keep = (rows_i >= 0) & (rows_j >= 0)
    graph = coo_matrix((np.ones(keep.sum()), (rows_i[keep], rows_j[keep])), shape=(n, n))
    n_groups, labels = connected_components(graph, directed=False)
    sizes = np.bincount(labels, minlength=n_groups)

    zp = catalog_zero_point(cat.meta) if zero_point is None else float(zero_point)
    exptime = exposure if zero_point is not None else None
    ka, _ = kron_axes(cat)
    shape = segmentation.shape if segmentation is not None else None
    flux = np.asarray(cat["flux_auto"], float)

    groups = [np.flatnonzero(labels == g) for g in np.flatnonzero(sizes >= 2)]
    groups.sort(key=lambda rows: -np.nansum(flux[rows]))
    blends = []
    for number, rows in enumerate(groups, start=1):
        rows = rows[np.argsort(-np.nan_to_num(flux[rows], nan=-np.inf))]
        beta = gaussian_blendedness(cat, rows)
        total = float(np.nansum(np.clip(flux[rows], 0, None)))
        mag = magnitude(total, zp, exptime)
        cat["blend_id"][rows] = number
        cat["blendedness"][rows] = beta
        blends.append(
            Blend(
                id=number,
                members=ids[rows].copy(),
                bbox=_bbox(cat, rows, ka, shape),
                positions=np.stack([np.asarray(cat["y"], float)[rows], np.asarray(cat["x"], float)[rows]], axis=1),
                fluxes=flux[rows].copy(),
                blendedness=float(np.max(beta)),
                magnitude=float(mag),
                member_blendedness=beta,
            )
        )
    return blends


@dataclass
class Stamp:
    """A cut-out around a blend.

    Attributes
    ----------
    data : numpy.ndarray
        ``(C, h, w)`` float32 pixels; zero where padded.
    mask : numpy.ndarray
        ``(C, h, w)`` bool, True for padded or invalid pixels.
    origin : tuple of int
        ``(y0, x0)`` of the stamp's pixel (0, 0) in the field (may be negative at edges).
    positions : numpy.ndarray
        ``(K, 2)`` member positions ``(y, x)`` in stamp pixels.
    padded : bool
        Whether part of the stamp lies outside the field.
    blend_id : int
        The blend it was cut for (0 for none).
    variance : numpy.ndarray or None
        ``(C, h, w)`` float32 per-pixel variance when the field has a noise
        plane; 0 where masked or padded.
    """

    data: np.ndarray
    mask: np.ndarray
    origin: tuple[int, int]
    positions: np.ndarray
    padded: bool
    blend_id: int = 0
    variance: np.ndarray | None = None


def stamp_noise(stamp: Stamp, default: float) -> float:
    """The background sigma of a stamp's band sum: from its variance where it has one, else ``default``.

    With a noise plane it is the median over the stamp's unmasked pixels of
    ``sqrt(sum of the bands' variances / C)``, the local noise (a field whose
    noise changes across it gets each blend's own).
    """
    if stamp.variance is None:
        return float(default)
    good = ~stamp.mask.any(axis=0)
    if not good.any():
        return float(default)
    per_pixel = np.sqrt(stamp.variance.mean(axis=0)[good])
    sigma = float(np.median(per_pixel))
    return sigma if np.isfinite(sigma) and sigma > 0 else float(default)


def stamp_variances(deblender, stamps: list[Stamp]) -> dict[str, np.ndarray]:
    """``{"variance": (N, C, h, w)}`` for a deblender that takes per-pixel variance (masked pixels infinite), else ``{}``."""
    if not getattr(deblender, "takes_variance", False) or any(s.variance is None for s in stamps):
        return {}
    return {"variance": np.stack([np.where(s.mask, np.inf, s.variance).astype(np.float32) for s in stamps])}


def stamp_origin(blend: Blend, size: int) -> tuple[int, int]:
    """Field pixel ``(y0, x0)`` of the first pixel of the ``size`` x ``size`` stamp centred on a blend."""
    cy, cx = blend.center
    return int(round(cy - (size - 1) / 2.0)), int(round(cx - (size - 1) / 2.0))


def cut_stamp(
    image: np.ndarray,
    blend: Blend,
    size: int | None = None,
    margin: int = 4,
    mask: np.ndarray | None = None,
    variance: np.ndarray | None = None,
) -> Stamp:
    """Cut a square stamp around a blend, padding with zeros beyond the image edge.

    Parameters
    ----------
    image : numpy.ndarray
        ``(C, H, W)`` or ``(H, W)`` field pixels.
    blend : Blend
        The blend to cut.
    size : int, optional
        Side of the stamp; default: the blend's bounding box plus ``margin`` on each side.
    margin : int
        Extra pixels around the bounding box when ``size`` is not given.
    mask : numpy.ndarray, optional
        Bad-pixel mask of the same shape as ``image`` (or ``(H, W)``).
    variance : numpy.ndarray, optional
        Per-pixel variance of the same shape as ``image``, cut the same way.

    Returns
    -------
    Stamp
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise DeblendInputError(f"image has shape {image.shape}: expected (H, W) or (C, H, W)")
    _, height, width = image.shape
    if size is None:
        size = blend.size + 2 * margin
    if size < 1:
        raise DeblendInputError(f"stamp size={size}: expected a positive number of pixels")
    y0, x0 = stamp_origin(blend, size)
    out = np.zeros((image.shape[0], size, size), dtype=np.float32)
    out_mask = np.ones(out.shape, dtype=bool)
    ys, ye = max(y0, 0), min(y0 + size, height)
    xs, xe = max(x0, 0), min(x0 + size, width)
    if ys < ye and xs < xe:
        inside = (slice(None), slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))
        if mask is None:
            out_mask[inside] = False
        else:
            m = np.asarray(mask, bool)
            out_mask[inside] = (m[None] if m.ndim == 2 else m)[:, ys:ye, xs:xe]
        out[inside] = image[:, ys:ye, xs:xe]
    out_variance = None
    if variance is not None:
        var = np.asarray(variance)
        var = var[None] if var.ndim == 2 else var
        out_variance = np.zeros(out.shape, dtype=np.float32)
        if ys < ye and xs < xe:
            out_variance[inside] = var[:, ys:ye, xs:xe]
        out_variance[out_mask] = 0.0
    padded = bool(y0 < 0 or x0 < 0 or y0 + size > height or x0 + size > width)
    positions = blend.positions - np.array([y0, x0], dtype=float)
    return Stamp(data=out, mask=out_mask, origin=(y0, x0), positions=positions, padded=padded, blend_id=blend.id,
                 variance=out_variance)
