"""Figures of a field evaluation (:mod:`napari_deblend.field_evaluation`): found fraction and Δf/f, runs overlaid."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib.figure import Figure

#: Bins of the nearest-neighbour distance, arcsec.
DISTANCE_BINS = np.array([0.0, 0.4, 0.7, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.0, 10.0])
MAG_STEP = 0.5
MIN_PER_BIN = 5
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def _mag_bins(evaluation: Any) -> np.ndarray:
    mags = np.concatenate([np.asarray(r.galaxies["mag"], float) for r in evaluation.runs])
    mags = mags[np.isfinite(mags)]
    if not len(mags):
        return np.array([20.0, 26.0])
    lo, hi = np.floor(mags.min() / MAG_STEP) * MAG_STEP, np.ceil(mags.max() / MAG_STEP) * MAG_STEP
    return np.arange(lo, hi + MAG_STEP / 2, MAG_STEP)


def binned(x: np.ndarray, values: np.ndarray, edges: np.ndarray, statistic: str) -> tuple[np.ndarray, ...]:
    """Bin centres and, per bin of at least ``MIN_PER_BIN`` finite values, the mean or the 16/50/84 percentiles."""
    x, values = np.asarray(x, float), np.asarray(values, float)
    centres, rows = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (x >= lo) & (x < hi) & np.isfinite(values)
        if inside.sum() < MIN_PER_BIN:
            continue
        centres.append((lo + hi) / 2)
        chosen = values[inside]
        rows.append([chosen.mean()] if statistic == "mean" else np.percentile(chosen, [16, 50, 84]))
    rows_arr = np.asarray(rows, float).reshape(len(centres), 1 if statistic == "mean" else 3)
    return (np.asarray(centres), *rows_arr.T)


def found_fraction_figure(evaluation: Any) -> Figure:
    """Found fraction against true magnitude (blended solid, isolated dashed) and nearest-neighbour distance."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    by_mag, by_distance = figure.subplots(1, 2)
    mag_edges = _mag_bins(evaluation)
    for colour, run in zip(COLOURS, evaluation.runs):
        g = run.galaxies
        found = np.asarray(g["found"], float)
        blended = np.asarray(g["blended"], bool)
        for chosen, style, label in ((blended, "-", "blended"), (~blended, "--", "isolated")):
            x, y = binned(np.asarray(g["mag"])[chosen], found[chosen], mag_edges, "mean")
            by_mag.plot(x, y, style, color=colour, marker="o", ms=3, label=f"{run.name}, {label}")
        x, y = binned(np.asarray(g["nn_distance"]) * evaluation.pixel_scale, found, DISTANCE_BINS, "mean")
        by_distance.plot(x, y, "-", color=colour, marker="o", ms=3, label=run.name)
    by_mag.set(xlabel="true magnitude (AB)", ylabel="found fraction", ylim=(0, 1.05),
               title="galaxies found (one-to-one, primary rows)")  # fmt: skip
    by_distance.axvline(evaluation.blend_distance, color="0.5", lw=0.8, ls=":")
    by_distance.set(xlabel="distance to the nearest true galaxy (arcsec)", ylabel="found fraction", ylim=(0, 1.05),
                    title=f"blended: a neighbour within {evaluation.blend_distance:g}″ (dotted)")  # fmt: skip
    for axes in (by_mag, by_distance):
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return figure


def flux_error_figure(evaluation: Any) -> Figure:
    """Δf/f of the found galaxies (median and 68 % band) against true magnitude and nearest-neighbour distance."""
    figure = Figure(figsize=(11, 4.2), layout="constrained")
    by_mag, by_distance = figure.subplots(1, 2)
    mag_edges = _mag_bins(evaluation)
    for colour, run in zip(COLOURS, evaluation.runs):
        g = run.galaxies
        dflux = np.asarray(g["dflux"], float)
        for axes, x, edges in ((by_mag, np.asarray(g["mag"], float), mag_edges),
                               (by_distance, np.asarray(g["nn_distance"]) * evaluation.pixel_scale, DISTANCE_BINS)):
            centres, p16, p50, p84 = binned(x, dflux, edges, "percentiles")
            axes.fill_between(centres, p16, p84, color=colour, alpha=0.2, lw=0)
            axes.plot(centres, p50, "-", color=colour, marker="o", ms=3, label=f"{run.name}: median, 16-84 %")
    by_mag.set(xlabel="true magnitude (AB)", title="Δf/f of the galaxies found (FLUX_BEST)")
    by_distance.axvline(evaluation.blend_distance, color="0.5", lw=0.8, ls=":")
    by_distance.set(xlabel="distance to the nearest true galaxy (arcsec)", title="Δf/f against blending")
    for axes in (by_mag, by_distance):
        axes.axhline(0.0, color="0.3", lw=0.8)
        axes.set_ylabel("Δf/f")
        axes.set_ylim(-0.6, 0.6)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
    return figure
