"""The evaluation's figures (matplotlib, in the spirit of Wang et al. 2021, Figs. 6, 8, 11)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.table import Table

from ..measurements import MATCH_RADIUS
from .evaluation_stats import RANK_NAMES, flux_stats

FIGURES = {
    "flux": "flux_recovered_vs_true.png",
    "dflux": "dflux_histogram.png",
    "dmag_mag": "dmag_vs_mag.png",
    "dmag_contrast": "dmag_vs_contrast.png",
    "moments": "moments_truth_vs_recovered.png",
    "recovered": "recovered_fraction.png",
}


# ---- figures --------------------------------------------------------------------------------------

_RANK_COLORS = ("tab:blue", "tab:orange", "tab:green")
_LINESTYLES = {1: ":", 2: "-", 3: "--"}


def _models_and_blends(t: Table) -> tuple[list[str], list[int]]:
    models = list(dict.fromkeys(np.asarray(t["model"]).astype(str)))
    blends = sorted({int(k) for k in np.asarray(t["n_galaxies"])})
    return models, blends


def _model_colors(models: list[str]) -> dict[str, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return {m: cmap(i % 10) for i, m in enumerate(models)}


def _select(t: Table, model: str | None = None, k: int | None = None) -> Table:
    mask = np.ones(len(t), dtype=bool)
    if model is not None:
        mask &= np.asarray(t["model"]).astype(str) == model
    if k is not None:
        mask &= np.asarray(t["n_galaxies"]) == k
    return t[mask]


def binned_stats(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 5) -> dict[str, np.ndarray]:
    """Median and 16/84 percentiles of ``y`` in bins of ``x`` (NaN where fewer than ``min_count`` points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    nb = len(edges) - 1
    out = {k: np.full(nb, np.nan) for k in ("median", "p16", "p84")}
    out["center"] = 0.5 * (edges[:-1] + edges[1:])
    out["count"] = np.zeros(nb, dtype=int)
    which = _bin_index(x, edges)
    for b in range(nb):
        vals = y[which == b]
        out["count"][b] = len(vals)
        if len(vals) >= min_count:
            out["p16"][b], out["median"][b], out["p84"][b] = np.percentile(vals, [16, 50, 84])
    return out


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each value (-1 / len(edges) - 1 outside); the last bin includes its right edge."""
    which = np.digitize(x, edges) - 1
    which[x == edges[-1]] = len(edges) - 2
    return which


def binned_mean(x: np.ndarray, y: np.ndarray, edges: np.ndarray, min_count: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Bin centres and mean of ``y`` in bins of ``x`` (NaN where fewer than ``min_count`` points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    which = _bin_index(x[ok], edges)
    nb = len(edges) - 1
    inside = (which >= 0) & (which < nb)
    count = np.bincount(which[inside], minlength=nb)
    total = np.bincount(which[inside], weights=y[ok][inside], minlength=nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = np.where(count >= min_count, total / count, np.nan)
    return 0.5 * (edges[:-1] + edges[1:]), mean


def _edges(values: np.ndarray, width: float, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return np.array([0.0, width])
    lo = np.floor(values.min() / width) * width if lo is None else lo
    hi = np.ceil(values.max() / width) * width if hi is None else hi
    return np.arange(lo, hi + width / 2, width) if hi > lo else np.array([lo, lo + width])


def _new_figure(nrows: int, ncols: int, width: float = 4.2, height: float = 3.6, **kw: Any):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def plot_flux_recovered(t: Table):
    """Recovered vs true flux, log-log with ``y = x`` (Wang et al. 2021 Figs. 6, 11); missed at the bottom."""
    models, blends = _models_and_blends(t)
    width = max(3.8, 6.0 / len(models))  # a single model's column still holds the title
    fig, axes = _new_figure(len(blends), len(models), width, 3.6, sharex=True, sharey=True)
    true_flux = np.asarray(t["true_flux"], float)
    pos = true_flux[true_flux > 0]
    lo, hi = (pos.min() / 3, pos.max() * 3) if len(pos) else (1.0, 10.0)
    for row, k in enumerate(blends):
        for col, model in enumerate(models):
            ax = axes[row, col]
            sub = _select(t, model, k)
            matched = np.asarray(sub["matched"], bool)
            for r in range(k):
                sel = matched & (np.asarray(sub["rank"]) == r)
                rec = np.clip(np.asarray(sub["rec_flux"], float)[sel], lo * 1.2, None)
                ax.scatter(sub["true_flux"][sel], rec, s=4, alpha=0.5, color=_RANK_COLORS[r],
                           label=f"{RANK_NAMES[r]}", rasterized=True)
            miss = ~matched
            ax.scatter(sub["true_flux"][miss], np.full(miss.sum(), lo * 1.2), marker="|", s=40, color="0.4",
                       alpha=0.6, label="missed")
            ax.plot([lo, hi], [lo, hi], color="k", lw=0.8)
            ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi))
            ax.set_title(f"{model}, {k} galaxies: {100 * matched.mean():.0f}% recovered"
                         if len(sub) else f"{model}, {k} galaxies", fontsize=10)
            if row == len(blends) - 1:
                ax.set_xlabel("true flux [e⁻]")
            if col == 0:
                ax.set_ylabel("recovered flux [e⁻]")
            ax.legend(loc="upper left", fontsize=7, markerscale=2, frameon=False)
    fig.suptitle("Recovered vs true flux\n(line: y = x; missed galaxies as ticks at the bottom)", fontsize=11)
    return fig


def plot_dflux_histogram(t: Table):
    """Histograms of Δf/f per true rank, models overlaid (missed galaxies at −1)."""
    models, blends = _models_and_blends(t)
    colors = _model_colors(models)
    nranks = max(blends)
    fig, axes = _new_figure(len(blends), nranks, 3.8, 3.0)
    edges = np.linspace(-1.05, 1.05, 43)
    for row, k in enumerate(blends):
        for r in range(nranks):
            ax = axes[row, r]
            if r >= k:
                ax.set_axis_off()
                continue
            for model in models:
                sub = _select(t, model, k)
                sel = np.asarray(sub["rank"]) == r
                d = np.clip(np.asarray(sub["dflux_frac"], float)[sel], -1.04, 1.04)
                s = flux_stats(d)
                missed = 1.0 - float(np.mean(np.asarray(sub["matched"])[sel])) if sel.any() else np.nan
                ax.hist(d, bins=edges, histtype="step", color=colors[model], lw=1.3,
                        label=f"{model}: {100 * missed:.0f}% missed\n{100 * s['bias']:+.0f}% ± {100 * s['scatter']:.0f}%")
            ax.axvline(0, color="k", lw=0.6)
            ax.set_yscale("log")
            ax.set_ylim(0.7, 40 * max(ax.get_ylim()[1], 1.0))  # room for the legend above the bars
            ax.set_xlim(edges[0], edges[-1])
            ax.set_title(f"{k} galaxies, {RANK_NAMES[r]}", fontsize=10)
            ax.set_xlabel("Δf/f (clipped to ±1; −1 = missed)")
            ax.set_ylabel("galaxies")
            ax.legend(fontsize=7, frameon=False, loc="upper right")
    fig.suptitle("Flux residuals Δf/f per brightness rank (legend: missed fraction; median ± 68% half-width, "
                 "missed counted as −1)")
    return fig


def plot_dmag(t: Table, xcol: str, xlabel: str, title: str, width: float = 0.5):
    """Binned median Δmag (matched galaxies) against ``xcol``, models overlaid, one panel per multiplicity."""
    models, blends = _models_and_blends(t)
    colors = _model_colors(models)
    fig, axes = _new_figure(1, len(blends), 4.8, 3.8, sharey=True)
    edges = _edges(np.asarray(t[xcol], float), width)
    for col, k in enumerate(blends):
        ax = axes[0, col]
        for model in models:
            sub = _select(t, model, k)
            matched = np.asarray(sub["matched"], bool)
            b = binned_stats(np.asarray(sub[xcol])[matched], np.asarray(sub["dmag"])[matched], edges)
            ax.fill_between(b["center"], b["p16"], b["p84"], color=colors[model], alpha=0.2, lw=0)
            ax.plot(b["center"], b["median"], "o-", color=colors[model], ms=3, label=model)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_title(f"{k}-galaxy blends", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=8, frameon=False)
    axes[0, 0].set_ylabel("Δmag = recovered − true [mag]")
    ylim = _robust_limits(np.asarray(t["dmag"], float), pad=0.1)
    axes[0, 0].set_ylim(ylim)
    fig.suptitle(f"{title}\n(matched galaxies; line: median, band: 16–84 percentiles)", fontsize=11)
    return fig


def _robust_limits(values: np.ndarray, pad: float = 0.05, q: tuple[float, float] = (2, 98)) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (-1.0, 1.0)
    lo, hi = np.percentile(values, q)
    span = max(hi - lo, 1e-3)
    return (float(lo - pad * span), float(hi + pad * span))


def plot_moments(t: Table):
    """Truth vs recovered μ11, e1 and e2 (Wang et al. 2021 Fig. 8), one row per model."""
    models, blends = _models_and_blends(t)
    quantities = (("mu11", "μ11 [pix²]"), ("e1", "e1"), ("e2", "e2"))
    fig, axes = _new_figure(len(models), 3, 3.6, 3.4)
    mu_all = np.abs(np.concatenate([np.asarray(t["true_mu11"], float), np.asarray(t["rec_mu11"], float)]))
    mu_all = mu_all[np.isfinite(mu_all)]
    mu_max = 1.3 * float(np.percentile(mu_all, 99.5)) if len(mu_all) else 1.0
    mu_lim = (-max(mu_max, 2.0), max(mu_max, 2.0))
    for row, model in enumerate(models):
        sub = _select(t, model)
        matched = np.asarray(sub["matched"], bool)
        for col, (q, label) in enumerate(quantities):
            ax = axes[row, col]
            lim = mu_lim if q == "mu11" else (-1.0, 1.0)
            for k in blends:
                sel = matched & (np.asarray(sub["n_galaxies"]) == k)
                x = np.asarray(sub[f"true_{q}"], float)[sel]
                y = np.clip(np.asarray(sub[f"rec_{q}"], float)[sel], *lim)
                ax.scatter(x, y, s=4, alpha=0.4, label=f"{k} galaxies", rasterized=True)
            ax.plot(lim, lim, color="k", lw=0.8)
            if q == "mu11":  # most galaxies are small: linear within ±1 pix², logarithmic beyond
                ax.set_xscale("symlog", linthresh=1.0)
                ax.set_yscale("symlog", linthresh=1.0)
            ax.set(xlim=lim, ylim=lim, xlabel=f"true {label}", ylabel=f"recovered {label}")
            ax.set_title(model, fontsize=10)
            ax.legend(fontsize=7, markerscale=2, frameon=False, loc="upper left")
    fig.suptitle("Second moments and ellipticity, truth vs recovered (matched galaxies; line y = x)")
    return fig


def plot_recovered(t: Table):
    """Recovered fraction vs separation and per rank, models side by side."""
    models, blends = _models_and_blends(t)
    colors = _model_colors(models)
    fig, axes = _new_figure(1, 2, 5.6, 3.9)
    ax = axes[0, 0]
    edges = _edges(np.asarray(t["separation"], float), 1.0, lo=0.0)
    for model in models:
        for k in blends:
            sub = _select(t, model, k)
            centers, frac = binned_mean(sub["separation"], np.asarray(sub["matched"], float), edges)
            ax.plot(centers, frac, _LINESTYLES.get(k, "-"), marker="o", ms=3, color=colors[model],
                    label=f"{model}, {k} gal.")
    ax.set(xlabel="distance to nearest neighbour [pix]", ylabel="recovered fraction", ylim=(-0.02, 1.02))
    ax.set_title("vs separation", fontsize=10)
    ax.legend(fontsize=7, frameon=False, loc="lower right")
    ax = axes[0, 1]
    groups = [(k, r) for k in blends for r in range(k)]
    wbar = 0.8 / max(len(models), 1)
    for m, model in enumerate(models):
        fracs = []
        for k, r in groups:
            sub = _select(t, model, k)
            sel = np.asarray(sub["rank"]) == r
            fracs.append(float(np.mean(np.asarray(sub["matched"])[sel])) if sel.any() else np.nan)
        x = np.arange(len(groups)) + (m - (len(models) - 1) / 2) * wbar
        ax.bar(x, fracs, width=wbar, color=colors[model], label=model)
    ax.set_xticks(np.arange(len(groups)), [f"{k} gal.\n{RANK_NAMES[r]}" for k, r in groups], fontsize=8)
    ax.set(ylabel="recovered fraction", ylim=(0, 1.2), yticks=np.linspace(0, 1, 6))
    ax.set_title("per brightness rank", fontsize=10)
    ax.legend(fontsize=8, frameon=False, loc="upper center", ncol=min(len(models), 4))
    fig.suptitle(f"Recovered galaxies (matched within {MATCH_RADIUS:g} px)")
    return fig


def write_figures(t: Table, out_dir: str | Path) -> dict[str, str]:
    """Write every evaluation figure (PNG) of a ``components`` table into ``out_dir``; return key -> file."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    out_dir = Path(out_dir)
    if len(t) == 0:
        return {}
    makers = {
        "flux": plot_flux_recovered,
        "dflux": plot_dflux_histogram,
        "dmag_mag": lambda t: plot_dmag(t, "true_mag", "true magnitude [AB]", "Magnitude residual vs magnitude"),
        "dmag_contrast": lambda t: plot_dmag(
            t, "mag_contrast", "magnitude difference to the brightest neighbour [mag]",
            "Magnitude residual vs magnitude difference (> 0: fainter than its neighbour)"),
        "moments": plot_moments,
        "recovered": plot_recovered,
    }
    written = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for key, make in makers.items():
            fig = make(t)
            fig.savefig(out_dir / FIGURES[key], dpi=110)
            written[key] = FIGURES[key]
    return written
