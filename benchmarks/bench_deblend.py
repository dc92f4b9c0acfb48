"""Deblending speed on CPU: single-blend latency and batched throughput, per model.

Targets: single-blend latency <= 100 ms; >= 50 blends/s batched (peeling).
Run: python benchmarks/bench_deblend.py [--models peeling sextractor] [--n 256]
         [--joint-flips 1] [--precision float32]   (peeling's settings; default: the shipped ones)
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from napari_deblend.deblenders import get_deblender
from napari_deblend.simulate import simulate_blends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["peeling", "vae", "unet", "sextractor"])
    parser.add_argument("--n", type=int, default=256)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--joint-flips", type=int, default=None, help="peeling: flips averaged by the joint refiner")
    parser.add_argument("--precision", default=None, help="peeling: auto or float32")
    args = parser.parse_args()
    if args.joint_flips is not None and not 1 <= args.joint_flips <= 4:
        parser.error(f"--joint-flips {args.joint_flips}: expected 1 to 4 flips")
    blends = simulate_blends(args.n, n_galaxies=2, seed=77)
    for name in args.models:
        model = get_deblender(name, device=args.device)
        if name == "peeling":
            if args.joint_flips is not None:
                model.joint_flips = args.joint_flips
            if args.precision is not None:
                model.precision = args.precision
        model.deblend_batch(blends.images[:2], noise=blends.noise_sigma)  # warm-up
        latencies = []
        for i in range(min(50, args.n)):
            t0 = time.perf_counter()
            model.deblend_batch(blends.images[i : i + 1], noise=blends.noise_sigma)
            latencies.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        model.deblend_batch(blends.images, noise=blends.noise_sigma)
        rate = args.n / (time.perf_counter() - t0)
        label = f"{name}, {model.joint_flips} flips, {model.precision_in_use()}" if name == "peeling" else name
        print(f"{label:10s} ({args.device}): single blend median {np.median(latencies) * 1000:.1f} ms, "
              f"p90 {np.percentile(latencies, 90) * 1000:.1f} ms (target <= 100 ms); "
              f"batched {rate:.0f} blends/s (target >= 50)")


if __name__ == "__main__":
    main()
