"""The labelling -> export -> fine-tuning loop on a simulated "real" survey, before/after figures.

"Real" galaxies here are irregular, knotty galaxies (GalSim ``RandomKnots`` star-forming
clumps on an exponential disk, sheared, Kolmogorov PSF): a morphology family the
parametric bulge + disk training simulator never draws. The script

1. simulates a field of such galaxies (LSST i-band noise, WCS) and writes it to FITS;
2. detects, and labels every isolated galaxy ``clean`` through the label store
   (a scripted stand-in for a person with the Label panel);
3. runs ``napari-deblend export-training`` and
   ``napari-deblend train peeling --real-galaxies ... --real-fraction F`` (fine-tuning the
   shipped weights for a few minutes);
4. evaluates the shipped and the fine-tuned weights on 2-galaxy blends of *new* irregular
   galaxies (never in the field) and on the parametric test set.

Usage::

    nice -n 19 python benchmarks/real_galaxy_finetune.py --out runs/realgal --minutes 3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from napari_deblend._extras import import_extra
from napari_deblend.cli import main as cli

PIXEL = 0.2
FWHM = 0.7


def draw_irregular(
    flux: float, hlr: float, rng: np.random.Generator, size: int, center=(None, None)
) -> np.ndarray:
    """A knotty galaxy of total ``flux`` (e-), half-light radius ``hlr`` (arcsec), PSF-convolved, ``size`` px."""
    galsim = import_extra("galsim")

    knot_fraction = rng.uniform(0.3, 0.7)
    disk = galsim.Exponential(half_light_radius=hlr, flux=1 - knot_fraction)
    knots = galsim.RandomKnots(
        npoints=int(rng.integers(5, 25)),
        half_light_radius=hlr * rng.uniform(0.8, 1.5),
        flux=knot_fraction,
        rng=galsim.BaseDeviate(int(rng.integers(1 << 30))),
    )
    e1, e2 = rng.normal(0, 0.25, 2).clip(-0.6, 0.6)
    galaxy = (disk + knots).shear(g1=e1 * 0.7, g2=e2 * 0.7).withFlux(flux)
    profile = galsim.Convolve(galaxy, galsim.Kolmogorov(fwhm=FWHM))
    cy, cx = center
    offset = (0.0, 0.0) if cy is None else (cx - (size - 1) / 2.0, cy - (size - 1) / 2.0)
    image = profile.drawImage(nx=size, ny=size, scale=PIXEL, offset=offset)
    return image.array.astype(np.float32)


def magnitudes(n: int, rng: np.random.Generator, lo: float = 20.0, hi: float = 24.5) -> np.ndarray:
    """Magnitudes with counts rising as 10^(0.3 m) (like the simulator's), between lo and hi."""
    u = rng.uniform(10 ** (0.3 * lo), 10 ** (0.3 * hi), n)
    return np.log10(u) / 0.3


def make_field(path: Path, n_galaxies: int, size: int, seed: int) -> None:
    """A field of irregular galaxies with noise and a WCS."""
    from napari_deblend.field import Field, write_field
    from napari_deblend.presets import get_preset
    from napari_deblend.simulate import add_noise, field_wcs

    preset = get_preset("lsst-i")
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size), np.float32)
    for mag in magnitudes(n_galaxies, rng, 20.0, 23.5):
        flux = preset.exposure * 10 ** (-0.4 * (mag - preset.zero_point))
        hlr = float(np.clip(rng.lognormal(np.log(0.6), 0.3), 0.3, 1.4))
        stamp = draw_irregular(flux, hlr, rng, 64)
        y, x = rng.integers(32, size - 32, 2)
        image[y - 32 : y + 32, x - 32 : x + 32] += stamp
    noisy = add_noise(image, preset, rng)
    wcs = field_wcs(size, preset, 150.0, 2.0)
    write_field(
        Field(
            noisy[None],
            band_names=[preset.band],
            wcs=wcs,
            preset=preset,
            noise=np.array([preset.background_sigma]),
        ),
        path,
        overwrite=True,
    )


def label_isolated(field_path: Path, database: Path) -> int:
    """Label every isolated detection clean (a scripted labeller); returns how many."""
    from napari_deblend import detect, find_blends, read_field
    from napari_deblend.labels import LabelStore
    from napari_deblend.labels.book import FieldLabels
    from napari_deblend.labels.targets import isolated_galaxies

    field = read_field(field_path)
    cat, seg = detect(field, preset="des")
    blends = find_blends(cat, seg)
    isolated = isolated_galaxies(cat, field.shape, min_flux=3e4)
    with LabelStore(database, user="benchmark") as store:
        book = FieldLabels(store, field, blends, isolated, detection={"preset": "des"})
        for galaxy in isolated:
            book.label("isolated", galaxy.id, "clean", note="scripted")
    return len(isolated)


def irregular_test_set(n: int, seed: int):
    """2-galaxy blends of new irregular galaxies at the separations and fluxes of the parametric test set."""
    from napari_deblend.simulate import add_noise
    from napari_deblend.training.evaluate import TestSet, make_test_set
    from napari_deblend.training.unet import component_stats

    parametric = make_test_set(n, 2, seed=seed, cache_dir=None)
    comps = parametric.components[:, :, 0]
    flux, centroid = component_stats(comps)
    rng = np.random.default_rng([seed, 99])
    new = np.zeros_like(parametric.components)
    for i in range(n):
        for j in range(int(parametric.n_components[i])):
            hlr = float(np.clip(rng.lognormal(np.log(0.6), 0.3), 0.3, 1.4))
            new[i, j, 0] = draw_irregular(float(flux[i, j]), hlr, rng, comps.shape[-1], tuple(centroid[i, j]))
        k = int(parametric.n_components[i])
        order = np.argsort(-new[i, :k, 0].sum(axis=(1, 2)))
        new[i, :k] = new[i, :k][order]
    images = np.stack([add_noise(new[i].sum(axis=0), "lsst-i", rng) for i in range(n)])
    _, positions = component_stats(new[:, :, 0])
    positions = np.where(
        np.arange(new.shape[1])[None, :, None] < parametric.n_components[:, None, None], positions, np.nan
    )
    return TestSet(
        images=images.astype(np.float32),
        components=new,
        n_components=parametric.n_components,
        positions=positions,
        noise_sigma=parametric.noise_sigma,
        n_galaxies=2,
        seed=seed,
        preset="lsst-i",
    ), parametric


def scores(model, test) -> dict:
    from napari_deblend.training.evaluate import evaluate_model, summarize_model

    table, _ = evaluate_model(model, test, device="cpu")
    summary = summarize_model(table)
    ranks = summary["ranks"]
    return {
        "recovered": [round(ranks[r]["recovered"], 3) for r in ("0", "1")],
        "bias": [round(ranks[r]["bias"], 4) for r in ("0", "1")],
        "scatter": [round(ranks[r]["scatter"], 4) for r in ("0", "1")],
        "psnr": round(summary["psnr"]["mean"], 2) if isinstance(summary.get("psnr"), dict) else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="runs/realgal")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--fraction", type=float, default=0.5)
    parser.add_argument("--galaxies", type=int, default=220, help="galaxies in the 'real' field")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tic = time.perf_counter()
    field_path = out / "irregular_field.fits"
    make_field(field_path, args.galaxies, 768, seed=11)
    n_clean = label_isolated(field_path, out / "labels.sqlite")
    print(
        f"field + labels: {n_clean} isolated galaxies labelled clean ({time.perf_counter() - tic:.0f} s)",
        flush=True,
    )
    assert (
        cli(["export-training", "--labels", str(out / "labels.sqlite"), "--out", str(out / "training")]) == 0
    )
    assert (
        cli(
            [
                "train",
                "peeling",
                "--real-galaxies",
                str(out / "training"),
                "--real-fraction",
                str(args.fraction),
                "--minutes",
                str(args.minutes),
                "--n-train",
                str(args.n_train),
                "--lr",
                "3e-4",
                "--workers",
                "1",
                "--out",
                str(out / "run"),
            ]
        )
        == 0
    )
    print(f"trained ({time.perf_counter() - tic:.0f} s)", flush=True)
    from napari_deblend.deblenders.peeling import PeelingDeblender
    from napari_deblend.training.evaluate import EVAL_SEED

    irregular, parametric = irregular_test_set(args.n_test, EVAL_SEED)
    results = {}
    for name, weights in (("shipped", None), ("fine-tuned", out / "run" / "peeling.pt")):
        model = PeelingDeblender(device="cpu", weights=weights)
        results[name] = {"irregular": scores(model, irregular), "parametric": scores(model, parametric)}
        print(name, json.dumps(results[name]), flush=True)
    results["settings"] = vars(args) | {
        "n_clean_isolated": n_clean,
        "seconds": round(time.perf_counter() - tic),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
