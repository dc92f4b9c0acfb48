"""Time to read + detect (+ group into blends) a simulated 4096 x 4096 LSST i-band field.

Target: read + detect under 3 s on a 2-core machine.
Run: python benchmarks/bench_detect.py [--size 4096] [--preset sextractor]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sep

from napari_deblend import detect, find_blends, read_field, write_field
from napari_deblend.simulate import simulate_field


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--preset", default="sextractor")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    start = time.perf_counter()
    field, truth = simulate_field(size=args.size, seed=1)
    print(f"simulated {args.size}² field with {len(truth)} galaxies in {time.perf_counter() - start:.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        path = write_field(field, Path(tmp) / "field.fits")
        for preset in dict.fromkeys([args.preset, "des"]):
            best = {}
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                f = read_field(path)
                t1 = time.perf_counter()
                cat, seg = detect(f, preset=preset)
                t2 = time.perf_counter()
                blends = find_blends(cat, seg)
                t3 = time.perf_counter()
                for key, value in (("read", t1 - t0), ("detect", t2 - t1), ("blends", t3 - t2), ("read+detect", t2 - t0)):
                    best[key] = min(best.get(key, 1e9), value)
            print(
                f"{preset:10s} {args.size}²: read {best['read']:.2f} s, detect {best['detect']:.2f} s, "
                f"read+detect {best['read+detect']:.2f} s (target < 3 s), find_blends {best['blends']:.2f} s; "
                f"{len(cat)} detections, {len(blends)} blends"
            )
        # the floor: sep alone on the same image
        image = f.data[0]
        t0 = time.perf_counter()
        bkg = sep.Background(image)
        sep.extract(image - bkg.back(), 1.5, err=bkg.globalrms)
        print(f"sep floor (Background + extract, no photometry): {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
