"""Figures of deblenders on the validation sets (never the test sets): what models and settings are chosen on.

Two validation sets, each with seeds of its own (``napari_deblend.training.testsets.VALIDATION_SEEDS``):
``parametric-validation`` (bulge + disk galaxies) and ``realistic-validation`` (the realistic morphology
mix and, with ``--real-pool``, real galaxies of the pool's ``validation`` split). For isolated galaxies it
prints the spurious components per galaxy and the Δf/f bias and scatter; for blends the scatter and the
recovered fraction of each rank. A model is a registry name, or ``name=WEIGHTS.pt`` for other weights,
either followed by ``@attr=value,...`` settings of the deblender (``peeling@split_threshold=0.3``).

Run: python benchmarks/validate_models.py --models peeling sextractor peeling=runs/new/peeling.pt \\
         --sets realistic-validation --blends 1 2 --n 600 --real-pool ~/.cache/napari-deblend/real_pool
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_deblend.deblenders.base import get_deblender
from napari_deblend.training.evaluate import (
    evaluate_model,
    make_test_set,
    summarize_model,
    warn_if_unregistered,
)
from napari_deblend.training.testsets import VALIDATION_SEEDS


def load(spec: str):
    """A CPU deblender from ``name``, ``name=weights.pt``, either followed by ``@attr=value,...`` settings."""
    spec, _, settings = spec.partition("@")
    name, _, weights = spec.partition("=")
    if not weights and not settings:
        model = get_deblender(name, device="cpu")
    else:  # an instance of its own: settings must not leak into the shared, cached one that later specs get
        from napari_deblend.deblenders.base import _load_class

        model = _load_class(name)(device="cpu", **({"weights": weights} if weights else {}))
    for item in filter(None, settings.split(",")):
        attr, _, value = item.partition("=")
        if not hasattr(model, attr) or not value:
            raise SystemExit(f"{item!r}: expected attr=value with an attribute of {name}")
        old = getattr(model, attr)
        setattr(model, attr, value.lower() in ("1", "true", "yes") if isinstance(old, bool) else type(old)(value))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["peeling", "sextractor"])
    parser.add_argument("--sets", nargs="+", default=list(VALIDATION_SEEDS), choices=list(VALIDATION_SEEDS))
    parser.add_argument("--n", type=int, default=600, help="stamps per multiplicity")
    parser.add_argument("--blends", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--real-pool", default=None, help="real-galaxy pool (its validation split)")
    parser.add_argument("--cache-dir", default="runs/valsets", help="where the validation stamps are cached")
    args = parser.parse_args()
    if args.real_pool:
        warn_if_unregistered(args.real_pool, "lsst-i")
    for test_set in args.sets:
        for k in args.blends:
            test = make_test_set(args.n, k, stamp_size=48, cache_dir=args.cache_dir, test_set=test_set,
                                 real_pool=args.real_pool)
            for spec in args.models:
                start = time.perf_counter()
                table, facts = evaluate_model(load(spec), test, device="cpu")
                s = summarize_model(table)
                ranks = s["ranks"]
                line = " / ".join(f"{100 * ranks[str(r)]['scatter']:.2f}" for r in range(k))
                found = " / ".join(f"{100 * ranks[str(r)]['recovered']:.1f}" for r in range(k))
                bias = " / ".join(f"{100 * ranks[str(r)]['bias']:+.2f}" for r in range(k))
                print(f"{test_set}, {k} galaxies, {spec}: scatter {line} %, bias {bias} %, recovered {found} %, "
                      f"spurious {s['spurious_per_stamp']:.3f} per stamp; "
                      f"{facts['seconds_per_stamp'] * 1e3:.1f} ms a stamp, {time.perf_counter() - start:.0f} s",
                      flush=True)
                if k == 1 and "by_family" in s:
                    worst = sorted(s["by_family"].items(), key=lambda kv: -np.nan_to_num(kv[1]["spurious_per_stamp"]))
                    print("    spurious per galaxy by family: " + ", ".join(
                        f"{f} {v['spurious_per_stamp']:.2f}" for f, v in worst[:6]), flush=True)


if __name__ == "__main__":
    main()
