"""What the comparison figure shows, panel by panel: shared by its two layouts.

:func:`_plan` turns a deblend result, the SExtractor result, the truth and an
optional second model into :class:`_Panel` records (row, column, image, title,
marks, note), and the helpers here give the stretch, the colormaps, the titles,
where ids go beside their crosses, the scale bar's length and the colourbar
ticks. :mod:`napari_deblend.plots` draws the panels with matplotlib axes (the
exported figure); :mod:`napari_deblend.plots_mosaic` paints them into one image
(the viewer's panel). Neither imports the other's drawing.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import numpy as np
from matplotlib import colors as mcolors
from matplotlib import patheffects

from .errors import DeblendInputError
from .measurements import (
    MATCH_RADIUS,
    component_measurements,
    is_sextractor_result,
    magnitude,
    match_positions,
    sextractor_status,
)

#: Colormap of the flux panels.
IMAGE_CMAP = "magma"
#: Diverging colormap of the residual panels.
RESIDUAL_CMAP = "RdBu_r"
#: Qualitative colormap of the segmentation labels.
LABEL_CMAP = "tab10"
#: Residual colour limits, in units of the band-sum noise.
RESIDUAL_NSIGMA = 5.0
#: Linear (soft) scale of the asinh stretch, in units of the band-sum noise.
SOFT_NSIGMA = 2.0
#: Lower limit of the flux panels, in units of the band-sum noise.
VMIN_NSIGMA = -2.0
#: SExtractor components get one panel each up to this many; more share one panel.
MAX_SEP_PANELS = 3
#: Style of the component ids written beside their crosses.
_ID_STYLE = {
    "color": "white",
    "fontsize": 8,
    "fontweight": "bold",
    "path_effects": [patheffects.withStroke(linewidth=2.2, foreground="black")],
}


# ---- panels ---------------------------------------------------------------------------------------


@dataclass
class _Panel:
    """One axes of the grid: what to draw and where."""

    row: int
    col: int
    label: str
    title: str = ""
    image: np.ndarray | None = None
    kind: str = "flux"  # flux | residual | labels | note
    text: str = ""
    marks: list[tuple[float, float, str]] = dc_field(default_factory=list)
    ylabel: str = ""
    outlines: np.ndarray | None = None  # labels image whose outlines to draw
    scalebar: bool = False


def _band_sum(array: np.ndarray) -> np.ndarray:
    """``(..., C, H, W)`` summed over bands -> ``(..., H, W)`` float64."""
    return np.asarray(array, dtype=np.float64).sum(axis=-3)


def _sum_noise(result: Any) -> float:
    """Background sigma of the band sum: from ``result.noise``, else a robust estimate on the residual."""
    n_bands = result.blend.shape[0]
    noise = float(getattr(result, "noise", float("nan")))
    if np.isfinite(noise) and noise > 0:
        return noise * np.sqrt(n_bands)
    resid = _band_sum(result.residual).ravel()
    mad = float(np.median(np.abs(resid - np.median(resid))))
    if mad > 0:
        return 1.4826 * mad
    spread = float(np.std(_band_sum(result.blend)))
    return spread if spread > 0 else 1.0


def _flux_norm(blend2d: np.ndarray, sigma: float, stretch: str) -> mcolors.Normalize:
    """The stretch shared by every flux panel: limits from the blend, soft scale from the noise."""
    vmin = VMIN_NSIGMA * sigma
    vmax = float(np.nanmax(blend2d)) if blend2d.size else 0.0
    if not vmax > vmin + sigma:
        vmax = vmin + 10.0 * sigma
    if stretch == "linear":
        return mcolors.Normalize(vmin=vmin, vmax=vmax)
    soft = SOFT_NSIGMA * sigma
    if hasattr(mcolors, "AsinhNorm"):
        return mcolors.AsinhNorm(linear_width=soft, vmin=vmin, vmax=vmax)
    return mcolors.FuncNorm(  # matplotlib < 3.6
        (lambda x: np.arcsinh(np.asarray(x) / soft), lambda y: soft * np.sinh(np.asarray(y))),
        vmin=vmin,
        vmax=vmax,
    )


def _flux_title(head: str, flux: float, zero_point: float, exposure: float, flux_name: str = "F") -> str:
    mag = magnitude(flux, zero_point, exposure)
    mag_text = f"{mag:.2f} mag" if np.isfinite(mag) else "no mag"
    return f"{head}\n{mag_text} · {flux_name} {_short_number(flux)} e⁻"


def _short_number(value: float) -> str:
    """A flux for a title: 3 significant figures, thousands as k, millions as M."""
    if not np.isfinite(value):
        return "nan"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _slots(reference: np.ndarray, positions: np.ndarray, n_reference: int) -> list[int]:
    """Column slot of each position: the slot of its matched reference, else new slots after them."""
    slots = [-1] * len(positions)
    if len(positions) and len(reference):
        for i, j in match_positions(positions, reference):
            slots[i] = j
    nxt = n_reference
    for i, slot in enumerate(slots):
        if slot < 0:
            slots[i] = nxt
            nxt += 1
    return slots


def _check_same_shape(result: Any, other: Any, what: str) -> None:
    if tuple(np.shape(other)[-2:]) != tuple(result.blend.shape[-2:]):
        raise DeblendInputError(
            f"{what} has images of {np.shape(other)[-2]}x{np.shape(other)[-1]} pixels: expected the blend's "
            f"{result.blend.shape[-2]}x{result.blend.shape[-1]}"
        )


def _resolve_sextractor(result: Any, sextractor: Any) -> Any:
    """``None``: run the ``sextractor`` deblender on the blend (or reuse ``result``); ``False``: none."""
    if sextractor is False:
        return None
    if sextractor is None or sextractor is True:
        if is_sextractor_result(result):
            return None  # the result is SExtractor's: no second, identical row
        from .deblenders.base import get_deblender

        noise = float(getattr(result, "noise", float("nan")))
        noise_arg = noise if np.isfinite(noise) and noise > 0 else None
        return get_deblender("sextractor").deblend_batch(result.blend[None], noise=noise_arg)[0]
    return sextractor


def _segmentation(sep: Any) -> np.ndarray:
    """Labels image ``(H, W)``, 1..K brightest first: sep's own, else from the masks."""
    seg = (sep.info or {}).get("segmentation")
    if seg is not None:
        return np.asarray(seg, dtype=int)
    return _labels_from_masks(sep).astype(int)


# ---- building the grid ----------------------------------------------------------------------------


def _plan(
    result: Any, sep: Any, truth: Any, other: Any, sigma: float, zero_point: float, exposure: float
) -> tuple[list[_Panel], int]:
    """All panels of the figure and the number of columns (one row per method, then the truth)."""
    k = result.n_components
    other_slots = _slots(result.positions, other.positions, k) if other is not None else []
    truth_slots = _slots(result.positions, truth.positions, k) if truth is not None else []
    sep_slots = _slots(result.positions, sep.positions, k) if sep is not None else []
    sep_single = sep is not None and sep.n_components > 0 and max(sep_slots) + 1 > k + MAX_SEP_PANELS
    used = [k, *[s + 1 for s in other_slots], *[s + 1 for s in truth_slots]]
    if sep is not None:
        used.append(1 if sep_single else max([0, *[s + 1 for s in sep_slots]]))
    c_resid = max(used) + 1
    n_bands = result.blend.shape[0]
    blend_title = "blend" if n_bands == 1 else f"blend (sum of {n_bands} bands)"
    marks = [(y, x, str(i + 1)) for i, (y, x) in enumerate(result.positions)]
    panels = [
        _Panel(0, 0, "blend", blend_title, _band_sum(result.blend), marks=marks, ylabel=_short_model(result),
               scalebar=True)
    ]
    panels += _component_panels(0, result, list(range(k)), "component", "", zero_point, exposure)
    panels.append(_residual_panel(0, c_resid, "residual", result.residual, sigma))
    notes: dict[int, Any] = {0: lambda slot: "no\ncomponent"}
    row = 1
    if other is not None:
        notes[row] = lambda slot: "no matching\ncomponent"
        title = "masks" + (f"\nquality: {other.quality}" if other.quality else "")
        panels.append(_Panel(row, 0, "other masks", title, _labels_from_masks(other), kind="labels",
                             marks=[(y, x, str(i + 1)) for i, (y, x) in enumerate(other.positions)],
                             ylabel=_short_model(other)))
        panels += _component_panels(row, other, other_slots, "other component", "", zero_point, exposure)
        panels.append(_residual_panel(row, c_resid, "other residual", other.residual, sigma))
        row += 1
    if sep is not None:
        status, index = sextractor_status(result.positions, sep.positions)
        seg = _segmentation(sep)

        def sep_note(slot: int, status: list[str] = status, index: np.ndarray = index) -> str:
            if slot >= k:
                return "no object\nhere"
            if status[slot] == "merged":
                return f"merged into S{index[slot] + 1}"
            inside = 0
            if np.all(np.isfinite(result.positions[slot])):
                y, x = np.round(result.positions[slot]).astype(int)
                inside = seg[y, x] if 0 <= y < seg.shape[0] and 0 <= x < seg.shape[1] else 0
            return f"not deblended:\ninside S{inside}" if inside > 0 else "missed"

        if not sep_single:  # the shared panel stands for all the components: no per-column notes
            notes[row] = sep_note
        panels += _sextractor_panels(row, sep, sep_slots, sep_single, c_resid, sigma, zero_point, exposure)
        row += 1
    if truth is not None:
        notes[row] = lambda slot: f"no truth within\n{MATCH_RADIUS:g} px (spurious?)" if slot < k else "—"
        t_comps = _band_sum(truth.components)
        t_marks = [(y, x, f"T{j + 1}") for j, (y, x) in enumerate(truth.positions)]
        t_sum = t_comps.sum(axis=0) if len(t_comps) else np.zeros(result.blend.shape[-2:])
        panels.append(_Panel(row, 0, "truth blend", "noiseless sum", t_sum, marks=t_marks, ylabel="truth"))
        for j, slot in enumerate(truth_slots):
            head = f"T{j + 1}" + ("" if slot < k else " unmatched")  # short: the row is labelled "truth"
            title = _flux_title(head, float(t_comps[j].sum()), zero_point, exposure)
            panels.append(_Panel(row, 1 + slot, f"truth component {j}", title, t_comps[j], marks=[t_marks[j]]))
        noise_image = _band_sum(result.blend) - t_sum
        panel = _residual_panel(row, c_resid, "truth noise", noise_image[None], sigma)
        panel.title = panel.title.replace("residual", "blend − Σ truth")
        panels.append(panel)
    occupied = {(p.row, p.col) for p in panels}
    for r, note in notes.items():
        for col in range(1, c_resid):
            if (r, col) not in occupied:
                panels.append(_Panel(r, col, f"note {r} {col}", kind="note", text=note(col - 1),
                                     image=np.zeros(result.blend.shape[-2:])))
    return panels, c_resid + 1


def _model_name(result: Any) -> str:
    """The deblender and the version of its weights (``peeling sha256:…``), for a title."""
    return str(result.model) or "model"


def _short_model(result: Any) -> str:
    """The deblender's name without its version (``peeling sha256:…`` → ``peeling``), for an axis label."""
    return _model_name(result).split(" ")[0]


def _component_panels(
    row: int, result: Any, slots: list[int], label: str, prefix: str, zero_point: float, exposure: float,
    flux_name: str = "F",
) -> list[_Panel]:
    """One panel per component of ``result``, in the columns given by ``slots``."""
    flux = component_measurements(result)["flux"]
    comps = _band_sum(result.components)
    out = []
    for i, slot in enumerate(slots):
        y, x = result.positions[i]
        title = _flux_title(f"{prefix}{i + 1}" if prefix else f"component {i + 1}", flux[i], zero_point, exposure,
                            flux_name)
        out.append(_Panel(row, 1 + slot, f"{label} {i}", title, comps[i], marks=[(y, x, f"{prefix}{i + 1}")]))
    return out


def _residual_panel(row: int, col: int, label: str, residual: np.ndarray, sigma: float) -> _Panel:
    image = _band_sum(residual)
    rms = float(np.sqrt(np.mean(image**2))) / sigma if image.size else float("nan")
    return _Panel(row, col, label, f"residual\nrms {rms:.2f}σ", image, kind="residual")


def _labels_from_masks(result: Any) -> np.ndarray:
    """Labels image 1..K from a result's ``(K, H, W)`` masks (the first component wins overlaps)."""
    masks = np.asarray(result.masks, dtype=bool).reshape(-1, *result.blend.shape[-2:])
    labels = np.zeros(result.blend.shape[-2:], dtype=float)
    for k in range(len(masks) - 1, -1, -1):
        labels[masks[k]] = k + 1
    return labels


def _sextractor_panels(
    row: int, sep: Any, slots: list[int], single: bool, c_resid: int, sigma: float, zero_point: float,
    exposure: float,
) -> list[_Panel]:
    seg = _segmentation(sep)
    n = sep.n_components
    marks = [(y, x, f"S{i + 1}") for i, (y, x) in enumerate(sep.positions)]
    noun = "object" if n == 1 else "objects"
    panels = [
        _Panel(row, 0, "sextractor segmentation", f"segmentation\n{n} {noun}", seg.astype(float), kind="labels",
               marks=marks, ylabel="SExtractor")
    ]
    name = "F_auto" if is_sextractor_result(sep) else "F"
    if single:
        total = _band_sum(sep.components).sum(axis=0)
        panels.append(_Panel(row, 1, "sextractor components", f"components\n{n} {noun}, outlined", total,
                             marks=marks, outlines=seg))
    else:
        panels += _component_panels(row, sep, slots, "sextractor component", "S", zero_point, exposure, name)
    panels.append(_residual_panel(row, c_resid, "sextractor residual", sep.residual, sigma))
    return panels


def _label_colormap(n_labels: int) -> tuple[mcolors.Colormap, mcolors.Normalize]:
    """A qualitative colormap for labels 0..n (0 = background, light grey)."""
    import matplotlib

    base = matplotlib.colormaps[LABEL_CMAP]
    n_base = getattr(base, "N", 10)
    colours = ["#e8e8e8"] + [base(i % n_base) for i in range(max(n_labels, 1))]
    cmap = mcolors.ListedColormap(colours)
    return cmap, mcolors.BoundaryNorm(np.arange(-0.5, len(colours) + 0.5), cmap.N)


def _label_places(marks: list[tuple[float, float, str]], shape: tuple[int, int]) -> list[tuple[int, int]]:
    """Side ``(sx, sy)`` of each mark on which to write its id, so that ids overlap neither each other
    nor the other marks, nor leave the panel (greedy, brightest/first mark first)."""
    height, width = shape
    char_w, text_h, gap = 0.04 * width, 0.065 * height, 0.03 * width  # rough size of 8-pt text, in pixels
    points = np.array([(x, y) for y, x, _ in marks], dtype=float).reshape(-1, 2)
    placed: list[tuple[float, float, float, float]] = []  # label boxes: centre x, centre y, half w, half h
    sides = []
    for i, (y, x, text) in enumerate(marks):
        half_w, half_h = 0.5 * char_w * max(len(text), 1), 0.5 * text_h
        best, best_score = (1, 1), -np.inf
        for rank, (sx, sy) in enumerate(((1, 1), (-1, 1), (1, -1), (-1, -1))):
            cx, cy = x + sx * (gap + half_w), y + sy * (gap + half_h)
            score = -rank * 1e-3  # prefer up-right, then up-left, ...
            # leaving the panel is worst
            out = max(0.0, half_w - cx + 0.5, cx + half_w - width + 0.5, half_h - cy + 0.5, cy + half_h - height + 0.5)
            score -= 10.0 * out
            # overlap with labels already placed and with the other marks
            for bx, by, bw, bh in placed:
                ox = max(0.0, half_w + bw - abs(cx - bx))
                oy = max(0.0, half_h + bh - abs(cy - by))
                score -= ox * oy
            for j, (px, py) in enumerate(points):
                if j != i and abs(px - cx) < half_w + 1 and abs(py - cy) < half_h + 1:
                    score -= 2.0 * half_h
            if score > best_score:
                best, best_score = (sx, sy), score
        sx, sy = best
        placed.append((x + sx * (gap + half_w), y + sy * (gap + half_h), half_w, half_h))
        sides.append(best)
    return sides


def _scalebar_arcsec(width: int, pixel_scale: float) -> float | None:
    """Length in arcsec (5, 2, 1 or 0.5) of a scale bar at most 30 % of a ``width``-pixel panel (None: none fits)."""
    if not pixel_scale > 0:
        return None
    return next((a for a in (5.0, 2.0, 1.0, 0.5) if a / pixel_scale <= 0.3 * width), None)


#: Figure attribute holding the axes that the ``"fast"`` layout re-uses (the mosaic layout drops them).
_POOL_ATTRIBUTE = "_napari_deblend_axes_pool"


def _flux_ticks(norm: mcolors.Normalize, min_gap: float = 0.09) -> list[float]:
    """Round colourbar ticks (0, ±1/2/5 × 10^n) at least ``min_gap`` apart in the stretched scale."""
    vmin, vmax = float(norm.vmin), float(norm.vmax)
    top = int(np.ceil(np.log10(max(abs(vmin), abs(vmax), 1e-30))))
    candidates = {0.0}
    for power in range(top - 8, top + 1):
        for mantissa in (1.0, 2.0, 5.0):
            candidates.update({mantissa * 10.0**power, -mantissa * 10.0**power})
    inside = sorted(v for v in candidates if vmin <= v <= vmax)
    # keep 0 first, then the largest values (most informative), then fill downwards
    position = dict(zip(inside, np.asarray(norm(np.asarray(inside, float)), float).ravel().tolist()))
    chosen: list[float] = []
    for v in sorted(inside, key=lambda v: (v != 0.0, -abs(v))):
        if all(abs(position[v] - position[c]) >= min_gap for c in chosen):
            chosen.append(v)
    return sorted(chosen)


#: Between the parts of a figure's title (a narrow figure drops the last parts first).
TITLE_SEPARATOR = "  ·  "


def _suptitle(result: Any, other: Any, stretch: str) -> str:
    """The figure's title: model, quality, blend and its origin, device, the second model, the stretch."""
    parts = [_model_name(result)]
    if result.quality:
        parts.append(f"quality: {result.quality}")
    origin = tuple(int(v) for v in result.origin)
    if result.blend_id or any(origin):
        parts.append(f"blend {result.blend_id} at (y, x) = {origin}")
    parts.append(f"device {result.device}")
    if other is not None:
        parts.append(f"vs {_model_name(other)}" + (f" ({other.quality})" if other.quality else ""))
    parts.append(f"{stretch} stretch")
    return TITLE_SEPARATOR.join(parts)
