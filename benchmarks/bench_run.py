"""Throughput of ``napari-deblend run`` end to end: stamps/s and megapixels/s, where the time goes, peak memory.

Simulates square lsst-i fields (``simulate_field``, default density), then runs
the headless pipeline on each configuration in a fresh process (so that peak
RSS is that run's alone) and prints one line per run::

    python benchmarks/bench_run.py                              # 4096² at 1 and 2 workers, sizes 1k..8k at 1
    python benchmarks/bench_run.py --size 4096 --workers 1 --sizes      # 4096², sep's blends vs every candidate
    python benchmarks/bench_run.py --sizes 1024 2048 --workers 1        # quicker

Each configuration runs once per ``--candidates`` mode, side by side:
``blends`` deblends sep's blends only (what a run did before single
detections were offered), ``extended`` (the default of ``napari-deblend run``)
also every detection larger than a point source; the last lines give the
wall-time ratio of each mode to the first. Stage seconds (read, background,
detect, deblend, measure, write) are summed over tasks, so with 2 workers they
add up to about twice the wall time.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STAGES = ("read", "background", "detect", "deblend", "measure", "write")


def simulate(size: int, directory: Path, seed: int) -> tuple[Path, float]:
    """Write a simulated field of ``size``² pixels; return its path and the simulation seconds."""
    from napari_deblend.field import write_field
    from napari_deblend.simulate import simulate_field

    path = directory / f"field{size}.fits"
    if path.exists():
        return path, 0.0
    start = time.perf_counter()
    field, _ = simulate_field(size, seed=seed)
    write_field(field, path)
    return path, time.perf_counter() - start


def run_one(path: Path, out: Path, workers: int, model: str, tile_size: int, device: str, candidates: str) -> dict:
    """One run in this process (``--one``): the run's totals, wall seconds and peak RSS (MB)."""
    from napari_deblend.pipeline import RunSettings, run_fields

    settings = RunSettings(model=model, device=device, tile_size=tile_size, candidates=candidates)
    cluster = None if workers == 1 else f"local:{workers}"
    start = time.perf_counter()
    summary = run_fields([path], out, settings, overwrite=True, dask_cluster=cluster, progress=False)
    wall = time.perf_counter() - start
    if summary.exit_code:
        raise SystemExit(f"run failed: {[f.error for f in summary.fields]}")
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall": wall, "totals": summary.totals(), "peak_rss_mb": peak_self,
            "peak_worker_rss_mb": peak_children, "tiles": summary.fields[0].record["tiles"]}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=4096, help="field side for the worker comparison")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts at --size")
    parser.add_argument("--sizes", type=int, nargs="*", default=[1024, 2048, 4096, 8192],
                        help="field sides for the scaling runs (1 worker)")  # fmt: skip
    parser.add_argument("--model", default="peeling")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--tile-size", type=int, default=2048)
    parser.add_argument("--candidates", nargs="+", default=["blends", "extended"],
                        choices=["blends", "extended", "all"],
                        help="offering modes measured side by side (default: blends extended)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where fields and outputs go (default: a temp dir)"
    )
    parser.add_argument("--one", nargs=4, metavar=("FIELD", "OUT", "WORKERS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        field, out, workers, mode = args.one
        print(json.dumps(run_one(Path(field), Path(out), int(workers), args.model, args.tile_size, args.device,
                                 mode)))  # fmt: skip
        return 0

    directory = args.dir or Path(tempfile.mkdtemp(prefix="bench_run_"))
    directory.mkdir(parents=True, exist_ok=True)
    runs = [(args.size, w) for w in args.workers] + [(s, 1) for s in args.sizes if (s, 1) not in
                                                     [(args.size, w) for w in args.workers]]  # fmt: skip
    runs.sort(key=lambda run: run[0])  # smallest first: partial results come early
    print(f"model {args.model}, tile {args.tile_size}, fields in {directory}")
    header = (f"{'field':>11} {'workers':>7} {'candidates':>10} {'tiles':>5} {'dets':>6} {'blends':>6} "
              f"{'singles':>7} {'comps':>6} {'wall s':>7} {'stamps/s':>8} {'MP/s':>6} "
              + " ".join(f"{s:>10}" for s in STAGES) + f" {'peak MB':>8} {'worker MB':>9} {'sim s':>6}")  # fmt: skip
    print(header)
    walls: dict[tuple[int, int, str], float] = {}
    for size, workers in runs:
        path, simulated = simulate(size, directory, args.seed)
        for mode in args.candidates:
            command = [sys.executable, __file__, "--one", str(path), str(directory / f"out{size}_{workers}_{mode}"),
                       str(workers), mode, "--model", args.model, "--tile-size", str(args.tile_size),
                       "--device", args.device]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                print(f"{size}x{size} workers={workers} candidates={mode}: failed\n{done.stderr[-2000:]}")
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            totals, wall = result["totals"], result["wall"]
            walls[(size, workers, mode)] = wall
            stamps = totals["blends"] + totals.get("singles", 0)
            stages = " ".join(f"{totals.get('seconds_' + s, 0.0):>10.1f}" for s in STAGES)
            print(f"{size:>5}x{size:<5} {workers:>7} {mode:>10} {result['tiles']:>5} {int(totals['detections']):>6} "
                  f"{int(totals['blends']):>6} {int(totals.get('singles', 0)):>7} {int(totals['components']):>6} "
                  f"{wall:>7.1f} {stamps / wall:>8.2f} {totals['megapixels'] / wall:>6.2f} {stages} "
                  f"{result['peak_rss_mb']:>8.0f} {result['peak_worker_rss_mb']:>9.0f} {simulated:>6.1f}",
                  flush=True)  # fmt: skip
            simulated = 0.0
    first = args.candidates[0]
    for (size, workers, mode), wall in walls.items():
        if mode != first and (size, workers, first) in walls:
            print(f"{size}x{size}, {workers} worker(s): {mode} takes {wall / walls[(size, workers, first)]:.2f}x "
                  f"the wall time of {first}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
