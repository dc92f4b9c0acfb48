"""Build napari layer data (``(data, kwargs, layer_type)`` tuples) from core results, without Qt."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .blends import Blend, kron_axes
from .detection import DetectionResult
from .parents import position_numbers

#: Shapes layers slow down past a few thousand shapes; draw at most this many ellipses.
MAX_ELLIPSES = 2000

HOVER_COLUMNS = ("id", "blend_id", "flux_auto", "mag_auto", "a", "b", "theta", "flags")


def ellipse_corners(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Bounding-box corners ``(N, 4, 2)`` in ``(y, x)`` of rotated ellipses, as napari's Shapes expects."""
    ct, st = np.cos(theta), np.sin(theta)
    corners = []
    for su, sv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
        cx = x + su * a * ct - sv * b * st
        cy = y + su * a * st + sv * b * ct
        corners.append(np.stack([cy, cx], axis=-1))
    return np.stack(corners, axis=1)


def detections_features(result: DetectionResult) -> pd.DataFrame:
    """Per-detection features shown on hover: id, catalogue number, blend, flux, magnitude, shape, flags.

    ``id`` is sep's label (the segmentation map's value); ``number`` the
    detection's ``NUMBER`` in a headless run's catalogue (rank by position,
    :func:`~napari_deblend.parents.position_numbers`), which components name as ``parent``.
    """
    cat = result.catalog
    frame = {col: np.asarray(cat[col]) for col in HOVER_COLUMNS if col in cat.colnames}
    if len(cat):
        frame["number"] = position_numbers(cat["y"], cat["x"])
    if "theta" in frame:
        frame["theta"] = np.degrees(frame["theta"]).round(1)
    for col in ("flux_auto", "a", "b"):
        if col in frame:
            frame[col] = np.asarray(frame[col], float).round(2 if col != "flux_auto" else 0)
    if "mag_auto" in frame:
        frame["mag_auto"] = np.asarray(frame["mag_auto"], float).round(3)
    return pd.DataFrame(frame)


def detection_layers(result: DetectionResult, name: str, blends: list[Blend] | None = None) -> list[tuple]:
    """Layer data for a detection: background-subtracted image, segmentation, points, blend ellipses.

    Parameters
    ----------
    result : DetectionResult
        From :func:`~napari_deblend.detection.run_detection`.
    name : str
        Prefix of the layer names (usually the field's file name).
    blends : list of Blend, optional
        Blends whose members get Kron ellipses (at most :data:`MAX_ELLIPSES`).

    Returns
    -------
    list of tuple
        ``(data, kwargs, layer_type)`` tuples, bottom layer first.
    """
    from ._reader import display_limits

    cat = result.catalog
    lo, hi, gamma = display_limits(result.detection_image, result.detection_rms)
    layers: list[tuple] = [
        (
            result.detection_image,
            {
                "name": f"{name} background-subtracted",
                "colormap": "gray",
                "contrast_limits": (lo, hi),
                "gamma": gamma,
                "visible": False,
            },
            "image",
        ),
        (result.segmentation, {"name": f"{name} segmentation", "opacity": 0.35, "visible": False}, "labels"),
    ]
    points = np.stack([np.asarray(cat["y"], float), np.asarray(cat["x"], float)], axis=1).reshape(-1, 2)
    in_blend = np.asarray(cat["blend_id"]) > 0 if "blend_id" in cat.colnames else np.zeros(len(cat), bool)
    layers.append(
        (
            points,
            {
                "name": f"{name} detections",
                "features": detections_features(result),
                "size": 5,
                "symbol": "cross",
                "face_color": np.where(in_blend[:, None], [[1.0, 0.3, 0.3, 1.0]], [[0.2, 1.0, 0.4, 1.0]]).reshape(-1, 4),
                "border_width": 0,
            },
            "points",
        )
    )
    if blends:
        layers.append(blend_ellipses_layer(result, blends, name))
    return layers


def blend_ellipses_layer(result: DetectionResult, blends: list[Blend], name: str) -> tuple:
    """Shapes layer data of the Kron ellipses of blend members, coloured by blend."""
    cat = result.catalog
    rows = np.flatnonzero(np.asarray(cat["blend_id"]) > 0)[:MAX_ELLIPSES]
    ka, kb = kron_axes(cat)
    corners = ellipse_corners(
        np.asarray(cat["x"], float)[rows],
        np.asarray(cat["y"], float)[rows],
        ka[rows],
        kb[rows],
        np.asarray(cat["theta"], float)[rows],
    )
    blend_ids = np.asarray(cat["blend_id"])[rows]
    return (
        list(corners),
        {
            "name": f"{name} blends",
            "shape_type": "ellipse",
            "edge_color": "orange",
            "face_color": "transparent",
            "edge_width": 1.0,
            "features": pd.DataFrame({"blend_id": blend_ids, "id": np.asarray(cat["id"])[rows]}),
            "opacity": 0.8,
        },
        "shapes",
    )


def selection_rectangle(blend: Blend) -> np.ndarray:
    """Corners ``(4, 2)`` ``(y, x)`` of a rectangle around a blend's bounding box."""
    ymin, ymax, xmin, xmax = blend.bbox
    y0, y1, x0, x1 = ymin - 0.5, ymax - 0.5, xmin - 0.5, xmax - 0.5
    return np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], dtype=float)


def result_layer_name(blend_id: int, model: str, part: str) -> str:
    """``blend 12 · peeling · component 1`` and the like."""
    return f"blend {blend_id} · {model} · {part}"


def mosaic_layer_name(model: str, part: str) -> str:
    """Name of a model's field-wide result layer, e.g. ``peeling · all blends · residual``."""
    return f"{model} · all blends · {part}"


def deblend_result_layers(result, model: str, noise: float | None = None) -> list[tuple]:
    """Layer data placing a :class:`~napari_deblend.deblenders.DeblendResult` where it belongs in the field.

    One image layer per component (band sum, additive blending), the residual
    with a diverging colormap centred on zero, the model's per-pixel
    uncertainty when it gives one (``info["component_sigma"]``, e.g. ``vae``:
    the components' sigmas in quadrature), the masks as a Labels layer
    (component k has label k + 1), and the component positions as Points, all
    translated to the stamp's origin.

    Parameters
    ----------
    result : DeblendResult
        The result to show.
    model : str
        Model name used in the layer names.
    noise : float, optional
        Background sigma for the contrast limits (default: ``result.noise``).
    """
    from ._reader import display_limits

    sigma = float(noise if noise is not None else result.noise)
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(np.std(result.residual)) or 1.0
    translate = tuple(float(v) for v in result.origin)
    blend_id = result.blend_id
    lo, hi, gamma = display_limits(result.blend.sum(axis=0), sigma)
    layers = []
    colormaps = ("magenta", "green", "cyan", "yellow", "red", "blue", "bop orange", "bop purple", "gray")
    for k, component in enumerate(result.components):
        layers.append(
            (
                component.sum(axis=0),
                {
                    "name": result_layer_name(blend_id, model, f"component {k + 1}"),
                    "translate": translate,
                    "colormap": colormaps[k % len(colormaps)],
                    "blending": "additive",
                    "contrast_limits": (0.0, max(hi, 1e-6)),
                    "gamma": gamma,
                    "metadata": {"napari_deblend_result": {"blend_id": blend_id, "model": model, "component": k}},
                },
                "image",
            )
        )
    limit = 5.0 * sigma
    layers.append(
        (
            result.residual.sum(axis=0),
            {
                "name": result_layer_name(blend_id, model, "residual"),
                "translate": translate,
                "colormap": "RdBu_r" if _has_colormap("RdBu_r") else "PiYG",
                "contrast_limits": (-limit, limit),
                "visible": False,
                "metadata": {"napari_deblend_result": {"blend_id": blend_id, "model": model, "component": None}},
            },
            "image",
        )
    )
    component_sigma = result.info.get("component_sigma")
    if component_sigma is not None and len(component_sigma):
        # the model's own per-pixel uncertainty (vae): components' sigmas added in quadrature, band sum
        total_sigma = np.sqrt((np.asarray(component_sigma, np.float64).sum(axis=1) ** 2).sum(axis=0))
        layers.append(
            (
                total_sigma.astype(np.float32),
                {
                    "name": result_layer_name(blend_id, model, "sigma"),
                    "translate": translate,
                    "colormap": "inferno",
                    "contrast_limits": (0.0, max(float(total_sigma.max()), 1e-6)),
                    "visible": False,
                    "metadata": {"napari_deblend_result": {"blend_id": blend_id, "model": model, "component": None}},
                },
                "image",
            )
        )
    labels = np.zeros(result.blend.shape[-2:], dtype=np.int32)
    for k, mask in enumerate(result.masks):
        labels[mask & (labels == 0)] = k + 1
    layers.append(
        (
            labels,
            {"name": result_layer_name(blend_id, model, "masks"), "translate": translate, "opacity": 0.4,
             "visible": False},
            "labels",
        )
    )
    positions = result.positions + np.asarray(result.origin, float)
    layers.append(
        (
            positions,
            {
                "name": result_layer_name(blend_id, model, "positions"),
                "features": pd.DataFrame({"component": np.arange(1, len(positions) + 1),
                                          "id": _per_component(result, "ids"),
                                          "parent": _per_component(result, "parents"),
                                          "flux": np.round(result.fluxes.sum(axis=1), 1)}),
                "text": {"string": "{component}", "color": "white", "size": 9, "translation": [-3, 3]},
                "symbol": "x",
                "size": 3,
                "face_color": "white",
                "border_width": 0,
            },
            "points",
        )
    )
    return layers


def _per_component(result, key: str) -> np.ndarray:
    """``result.info[key]`` (catalogue ids, parents; see :mod:`napari_deblend.parents`), zeros when absent."""
    values = result.info.get(key)
    k = result.n_components
    return np.asarray(values, np.int64) if values is not None and len(values) == k else np.zeros(k, np.int64)


def _has_colormap(name: str) -> bool:
    try:
        from napari.utils.colormaps import ensure_colormap

        ensure_colormap(name)
        return True
    except Exception:
        return False
