"""The evaluation's Markdown tables and report, and the model cards its numbers go into."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..errors import DeblendInputError
from .evaluation_stats import COUNT_CLASSES, QUALITY_CLASSES, RANK_NAMES, TRUTH_MASK_NSIGMA, nan_to_none

# ---- Markdown -------------------------------------------------------------------------------------


def _pct(value: Any, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return f"{100 * value:+.1f}%" if signed else f"{100 * value:.1f}%"


def _num(value: Any, fmt: str = ".2f") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    return format(value, fmt)


def _metric_rows(block: dict[str, dict[str, Any]], k: int) -> list[tuple[str, list[str]]]:
    names = list(block)
    rows: list[tuple[str, list[str]]] = []
    for r in range(k):
        label = RANK_NAMES[r]
        ranks = [block[m]["ranks"].get(str(r), {}) for m in names]
        rows.append((f"recovered, {label}", [_pct(s.get("recovered")) for s in ranks]))
        rows.append((f"Δf/f bias, {label}", [_pct(s.get("bias"), True) for s in ranks]))
        rows.append((f"Δf/f scatter, {label}", [_pct(s.get("scatter")) for s in ranks]))
        rows.append((f"scatter (matched only), {label}", [_pct(s.get("scatter_matched")) for s in ranks]))
    rows.append(("spurious per stamp", [_num(block[m]["spurious_per_stamp"], ".3f") for m in names]))
    by_count = [block[m].get("by_count") for m in names]
    if all(by_count):
        rows.append(("stamps: right count / too many / too few components",
                     [" / ".join(_pct(c[name]["fraction"]) for name in COUNT_CLASSES) for c in by_count]))
        for r in range(k):
            rows.append((f"Δf/f scatter, {RANK_NAMES[r]}: right count / too many",
                         [" / ".join(_pct(c[name]["ranks"].get(str(r), {}).get("scatter")) for name in COUNT_CLASSES[:2])
                          for c in by_count]))
    for metric, fmt in (("psnr", ".1f"), ("ssim", ".3f"), ("mask_iou", ".3f")):
        label = {"psnr": "PSNR (matched) [dB]", "ssim": "SSIM (matched)",
                 "mask_iou": f"mask IoU vs truth > {TRUTH_MASK_NSIGMA:g}σ (matched)"}[metric]
        rows.append(
            (
                label,
                [f"{_num(block[m][metric]['mean'], fmt)} ± {_num(block[m][metric]['std'], fmt)}" for m in names],
            )
        )
    for cls in QUALITY_CLASSES:
        rows.append(
            (
                f"quality {cls} (stamps)",
                [_pct(block[m]["quality"][cls]["fraction"]) if block[m]["quality"] else "" for m in names],
            )
        )
    rows.append(("ms per stamp (deblending)", [_num(1e3 * block[m]["seconds_per_stamp"], ".2f") for m in names]))
    return rows


def _markdown_table(header: list[str], rows: list[tuple[str, list[str]]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join([label, *cells]) + " |" for label, cells in rows]
    return "\n".join(lines)


def markdown_tables(summary: dict[str, Any]) -> str:
    """The Markdown tables of a summary: per multiplicity, the models side by side; near-equal pairs."""
    models = list(summary["models"])
    settings = summary["settings"]
    parts = []
    for k in settings["blends"]:
        block = {m: summary["models"][m][str(k)] for m in models}
        n_stamps = next(iter(block.values()))["n_stamps"]
        parts.append(f"### {k}-galaxy blends ({n_stamps} stamps)\n")
        parts.append(_markdown_table(["metric", *models], _metric_rows(block, k)) + "\n")
    if 2 in settings["blends"]:
        lo, hi = settings["near_equal_ratio"]
        block = {m: summary["models"][m]["2"]["near_equal"] for m in models}
        n_pairs = next(iter(block.values()))["n_stamps"]
        parts.append(f"### Near-equal flux pairs (2-galaxy blends, flux ratio {lo}–{hi}; {n_pairs} stamps)\n")
        rows = [
            ("recovered", [_pct(block[m]["recovered"]) for m in models]),
            ("Δf/f bias", [_pct(block[m]["bias"], True) for m in models]),
            ("Δf/f scatter", [_pct(block[m]["scatter"]) for m in models]),
            ("scatter (matched only)", [_pct(block[m]["scatter_matched"]) for m in models]),
        ]
        parts.append(_markdown_table(["metric", *models], rows) + "\n")
    return "\n".join(parts)


def family_tables(summary: dict[str, Any]) -> str:
    """Markdown tables per morphology family (realistic test set): recovered, scatter, spurious per stamp."""
    models = list(summary["models"])
    parts = []
    for k in summary["settings"]["blends"]:
        blocks = {m: summary["models"][m][str(k)].get("by_family") for m in models}
        if not any(blocks.values()):
            continue
        families = sorted({f for b in blocks.values() if b for f in b})
        what = "isolated galaxies" if k == 1 else f"{k}-galaxy blends"
        parts.append(f"### By morphology family, {what}: Δf/f scatter (recovered) · spurious per stamp\n")
        rows = []
        for family in families:
            cells = []
            for m in models:
                f = (blocks[m] or {}).get(family)
                cells.append("–" if f is None else f"{_pct(f['scatter'])} ({_pct(f['recovered'])}) · "
                             f"{_num(f['spurious_per_stamp'])}")
            n_true = next((b[family]["n_true"] for b in blocks.values() if b and family in b), 0)
            rows.append((f"{family} ({n_true})", cells))
        parts.append(_markdown_table(["family (true galaxies)", *models], rows) + "\n")
    return "\n".join(parts)


def markdown_report(summary: dict[str, Any], figure_files: dict[str, str] | None = None) -> str:
    """The full ``report.md``: settings, definitions, tables and figure links."""
    s = summary["settings"]
    test_set = s.get("test_set", "parametric")
    described = ("parametric bulge + disk galaxies" if test_set == "parametric" else
                 "the realistic morphology mix" + (" with real galaxies of the pool's test split"
                                                   if s.get("real_pool") else ""))
    split = s.get("real_pool_split") or {}
    if split.get("galaxies"):
        registered = split.get("registered_galaxies")
        described += (f" ({split['galaxies']['test']} galaxies; "
                      + (f"{registered} galaxies of the pool in their registered split"
                         if registered is not None else "a pool built without the split register") + ")")
    lines = [
        f"# Deblender evaluation: {test_set} test set",
        "",
        f"Galaxies: {described}. {s['n']} simulated blends per multiplicity ({', '.join(map(str, s['blends']))} galaxies), preset "
        f"`{s['preset']}` (σ = {s['noise_sigma']:.0f} e⁻), {s['stamp_size']}×{s['stamp_size']} stamps, seed "
        f"{s['seed']}; {s['date']}.",
        "",
        f"Components are matched one-to-one to the truth within {s['match_radius']:g} px. Δf/f = (recovered − "
        "true)/true with true = sum of the noiseless component's pixels; a missed galaxy counts as Δf/f = −1. "
        "Bias = median, scatter = half the 16–84 percentile width. SExtractor flux = FLUX_AUTO. Ranks: "
        "brightest first. PSNR/SSIM compare each matched component with its noiseless truth.",
        "",
        markdown_tables(summary),
        family_tables(summary),
    ]
    if figure_files:
        lines += ["## Figures", ""]
        lines += [f"![{key}]({name})" for key, name in figure_files.items()]
        lines.append("")
    return "\n".join(lines)


# ---- model cards ----------------------------------------------------------------------------------


def update_model_card(card_path: str | Path, summary: dict[str, Any], model: str,
                      inference: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a model's evaluation numbers into its model-card JSON.

    The parametric test set's numbers go under ``"metrics"``, the realistic one's under
    ``"metrics_realistic"``.

    Parameters
    ----------
    card_path : str or Path
        Model-card JSON (created if absent).
    summary : dict
        Output of :func:`evaluate_models`.
    model : str
        Model name in ``summary["models"]``.
    inference : dict, optional
        How the deblender used the weights in this evaluation (written under
        ``"inference"``: the metrics depend on it).

    Returns
    -------
    dict
        The updated card.
    """
    if model not in summary.get("models", {}):
        known = ", ".join(summary.get("models", {})) or "none"
        raise DeblendInputError(f"model {model!r} is not in the evaluation summary: expected one of {known}")
    card_path = Path(card_path)
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    key = "metrics" if summary["settings"].get("test_set", "parametric") == "parametric" else "metrics_realistic"
    card[key] = nan_to_none(
        {
            "source": "napari_deblend.training.evaluate.evaluate_models",
            "settings": summary["settings"],
            "by_blend_multiplicity": summary["models"][model],
        }
    )
    if inference is not None:
        card["inference"] = inference
    tmp = card_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(card, indent=2))
    tmp.replace(card_path)
    return card


def model_card_path(model: Any, device: str = "cpu", preset: Any = None) -> Path | None:
    """Where a model's card lives: beside its weights (``<weights>.json``), else ``weights/<name>.json``.

    Returns ``None`` for models without weights or card (e.g. ``sextractor``).
    """
    from ..deblenders import base

    deblender = model if isinstance(model, base.Deblender) else base.get_deblender(str(model), device, preset)
    weights = getattr(deblender, "weights", None)
    if weights is not None and Path(weights).exists():
        return Path(weights).with_suffix(".json")
    card = Path(base.__file__).parent / "weights" / f"{deblender.name}.json"
    return card if card.exists() else None
