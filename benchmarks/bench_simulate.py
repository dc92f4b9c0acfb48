"""Speed of the simulator: blend stamps per second and seconds per field.

Usage::

    python benchmarks/bench_simulate.py [--n 4000] [--fields 1024 4096] [--galsim]

Prints two-galaxy 48x48 blend stamps/s with 1 and 2 worker processes (the 2-worker
figure includes spawning the workers), optionally the GalSim ``drawImage`` reference
engine, and the seconds to simulate square fields.
"""

from __future__ import annotations

import argparse
import os
import time

from napari_deblend.simulate import simulate_blends, simulate_field


def blend_rate(n: int, n_workers: int, engine: str = "fft") -> float:
    """Two-galaxy 48x48 stamps per second."""
    start = time.perf_counter()
    simulate_blends(n, n_galaxies=2, stamp_size=48, seed=1, n_workers=n_workers, engine=engine)
    return n / (time.perf_counter() - start)


def field_seconds(size: int) -> tuple[float, int]:
    """Seconds to simulate a ``size`` x ``size`` field, and its number of galaxies."""
    start = time.perf_counter()
    _, truth = simulate_field(size=size, seed=1)
    return time.perf_counter() - start, len(truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="stamps per blend measurement (default 4000)")
    parser.add_argument("--fields", type=int, nargs="*", default=[1024, 4096], help="field sizes")
    parser.add_argument("--galsim", action="store_true", help="also time the GalSim drawImage engine")
    args = parser.parse_args()
    print(f"CPU cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}")
    simulate_blends(8, seed=0)  # warm up: GalSim tables of the bulge and PSF profiles
    for workers in (1, 2):
        print(f"2-galaxy 48x48 blends, {workers} process{'es' if workers > 1 else ''}: "
              f"{blend_rate(args.n, workers):7.0f} stamps/s")
    if args.galsim:
        n = max(args.n // 10, 100)
        print(f"2-galaxy 48x48 blends, GalSim drawImage engine, 1 process: {blend_rate(n, 1, 'galsim'):7.0f} stamps/s")
    for size in args.fields:
        seconds, n_gal = field_seconds(size)
        print(f"field {size}x{size} ({n_gal} galaxies, 40/arcmin^2): {seconds:6.2f} s")


if __name__ == "__main__":
    main()
