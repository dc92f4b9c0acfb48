"""Speed and memory of ``read_field`` on an 8192 x 8192 float32 big-endian FITS file (256 MB).

Usage::

    python benchmarks/bench_read.py [--size 8192] [--formats fits,int16,fz,gz] [--repeat 3]

The file is written to a temporary directory; every measurement reads it in a
fresh Python process, so that the memory figures are those of the read alone:

- ``time``: wall-clock seconds of ``read_field`` (best of ``--repeat``);
- ``tracemalloc peak``: largest Python/numpy heap allocated during the read
  (it counts the Field constructor's default all-False mask, which is
  calloc'ed, never touched and dropped at once: 1/4 of the data size);
- ``peak RSS delta``: growth of the process's peak resident set size
  (``VmHWM``, reset just before the read) over the read: the memory really used;
- ``kept RSS``: resident memory still held once the file is closed.

Each figure is also given relative to the size of the float32 data (C x H x W x 4 bytes).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

FORMATS = {
    "fits": "float32 big-endian, uncompressed",
    "int16": "int16 with BSCALE/BZERO, uncompressed",
    "fz": "float32, tile-compressed GZIP_2 lossless (.fits.fz)",
    "gz": "float32, gzipped file (.fits.gz; decompressed to a temporary file first)",
}


def write_test_file(directory: Path, size: int, kind: str) -> Path:
    """Write a ``size`` x ``size`` noise image (sigma 446, a few NaNs) in the given format."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((size, size), dtype=np.float32)
    image *= 446.0
    image[::1000, ::1000] = np.nan
    if kind == "fits":
        path = directory / "field.fits"
        fits.PrimaryHDU(image.astype(">f4", copy=False)).writeto(path)
    elif kind == "int16":
        path = directory / "field_int16.fits"
        hdu = fits.PrimaryHDU(np.nan_to_num(image, nan=0.0))
        hdu.scale("int16", bscale=0.25, bzero=1000.0)
        hdu.writeto(path)
    elif kind == "fz":
        path = directory / "field.fits.fz"
        image = np.round(image)  # compressible, still lossless
        hdu = fits.CompImageHDU(image, compression_type="GZIP_2", quantize_level=0)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    elif kind == "gz":
        path = directory / "field.fits.gz"
        fits.PrimaryHDU(np.round(image).astype(">f4")).writeto(path)
    else:
        raise ValueError(f"unknown format {kind!r}: expected one of {', '.join(FORMATS)}")
    return path


def _status_bytes(key: str) -> int:
    """A memory line of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes."""
    with open("/proc/self/status") as stream:
        for line in stream:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as stream:
            stream.write("5")
        return True
    except OSError:
        return False


def measure_in_this_process(path: str, trace: bool) -> dict:
    """Read ``path`` once and return time and memory figures (runs in the child process)."""
    import tracemalloc

    from napari_deblend.field import read_field

    read_field(np.ones((4, 4), np.float32))  # import and warm up everything first
    rss_before = _status_bytes("VmRSS")
    # ru_maxrss would be inherited from the parent process; VmHWM belongs to this one.
    peak_reset = _reset_peak_rss()
    peak_before = _status_bytes("VmHWM")
    if trace:
        tracemalloc.start()
    start = time.perf_counter()
    field = read_field(path)
    elapsed = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] if trace else None
    if trace:
        tracemalloc.stop()
    peak_after = _status_bytes("VmHWM")
    return {
        "time": elapsed,
        "data_bytes": field.data.nbytes,
        "tracemalloc_peak": peak,
        "peak_rss_delta": peak_after - (rss_before if peak_reset else peak_before),
        "peak_reset": peak_reset,
        "kept_rss": _status_bytes("VmRSS") - rss_before,
        "noise": float(field.noise[0]),
        "masked": int(field.mask.sum()),
    }


def measure(path: Path, trace: bool) -> dict:
    """Run :func:`measure_in_this_process` in a fresh interpreter."""
    output = subprocess.run(
        [sys.executable, __file__, "--child", str(path)] + (["--trace"] if trace else []),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def _mb(n: float) -> str:
    return f"{n / 2**20:7.1f} MB"


def report(kind: str, path: Path, repeat: int) -> None:
    runs = [measure(path, trace=False) for _ in range(repeat)]
    traced = measure(path, trace=True)
    best = min(runs, key=lambda r: r["time"])
    median_time = float(np.median([r["time"] for r in runs]))
    size = best["data_bytes"]
    print(f"\n{kind}: {FORMATS[kind]}")
    print(f"  file                 {path.name}, {_mb(path.stat().st_size)} on disk, data {_mb(size)}")
    print(f"  read_field time      {best['time']:.2f} s best, {median_time:.2f} s median of {repeat} reads")
    print(f"  throughput           {size / 2**20 / best['time']:.0f} MB/s of float32 data")
    print(
        f"  tracemalloc peak     {_mb(traced['tracemalloc_peak'])}  = {traced['tracemalloc_peak'] / size:.2f} x data"
    )
    note = "" if best["peak_reset"] else " (VmHWM could not be reset: a lower bound)"
    print(
        f"  peak RSS delta       {_mb(best['peak_rss_delta'])}  = {best['peak_rss_delta'] / size:.2f} x data{note}"
    )
    print(f"  kept RSS             {_mb(best['kept_rss'])}  = {best['kept_rss'] / size:.2f} x data")
    print(f"  noise estimate       {best['noise']:.1f} (true 446), masked pixels {best['masked']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="image side in pixels (default 8192)")
    parser.add_argument("--formats", default="fits", help=f"comma-separated, from {','.join(FORMATS)}")
    parser.add_argument("--repeat", type=int, default=3, help="timed reads per format")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_in_this_process(args.child, args.trace)))
        return
    print(f"read_field benchmark: {args.size} x {args.size} pixels, one band")
    with tempfile.TemporaryDirectory() as directory:
        for kind in args.formats.split(","):
            path = write_test_file(Path(directory), args.size, kind.strip())
            report(kind.strip(), path, args.repeat)
            path.unlink()


if __name__ == "__main__":
    main()
