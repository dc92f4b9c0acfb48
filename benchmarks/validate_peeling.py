"""Flux figures of ``peeling`` inference variants on the validation blends (seed 424242, never the test set).

The README's choices of the joint refiner's sweeps and flips, of the precision and of the flux
calibration were made with these numbers. Each variant is ``name=value`` settings of :class:`PeelingDeblender` joined by ``,``
(``default`` for the shipped settings; ``joint=none`` for the RDN sweep instead of the joint refiner).

Run: python benchmarks/validate_peeling.py --variants default calibrate_flux=no joint_flips=1,precision=float32 --blends 2 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_deblend.deblenders.peeling import PeelingDeblender
from napari_deblend.training.evaluate import evaluate_model, flux_stats, make_test_set

VALIDATION_SEED = 424242
SETTINGS = {"joint_flips": int, "joint_sweeps": int, "refine_sweeps": int, "precision": str,
            "refit_brightest": lambda v: v.lower() in ("1", "true", "yes"),
            "calibrate_flux": lambda v: v.lower() in ("1", "true", "yes"), "joint": str}


def configure(variant: str) -> PeelingDeblender:
    """A CPU ``PeelingDeblender`` with the settings of ``variant`` (``name=value,...`` or ``default``)."""
    model = PeelingDeblender(device="cpu")
    if variant == "default":
        return model
    for item in variant.split(","):
        name, _, value = item.partition("=")
        if name not in SETTINGS or not value:
            raise SystemExit(f"variant {variant!r}: {item!r} is not name=value with a name in {', '.join(SETTINGS)}")
        if name == "joint":
            if value != "none":
                raise SystemExit(f"variant {variant!r}: joint=none is the only joint setting")
            model.joint = None
        else:
            setattr(model, name, SETTINGS[name](value))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", default=["default"])
    parser.add_argument("--n", type=int, default=1000, help="blends per multiplicity")
    parser.add_argument("--blends", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--cache-dir", default="runs/valsets", help="where the validation blends are cached")
    args = parser.parse_args()
    for k in args.blends:
        test = make_test_set(args.n, k, seed=VALIDATION_SEED, cache_dir=args.cache_dir)
        for variant in args.variants:
            model = configure(variant)
            start = time.perf_counter()
            table, facts = evaluate_model(model, test, device="cpu")
            stats = [flux_stats(np.asarray(table[table["rank"] == r]["dflux_frac"])) for r in range(k)]
            found = [np.mean(table[table["rank"] == r]["matched"]) for r in range(k)]
            print(f"{k} galaxies, {variant} ({model.precision_in_use()}): Δf/f scatter "
                  + " / ".join(f"{s['scatter'] * 100:.2f}" for s in stats) + " %, bias "
                  + " / ".join(f"{s['bias'] * 100:+.2f}" for s in stats) + " %, recovered "
                  + " / ".join(f"{f * 100:.1f}" for f in found) + f" %; {facts['seconds_per_stamp'] * 1e3:.1f} ms a "
                  f"stamp, {time.perf_counter() - start:.0f} s", flush=True)


if __name__ == "__main__":
    main()
