"""The learned source finder on the stamps a field run gives it: sources found, extra and missed, per weights.

``unet`` and ``vae`` take their sources from the finder on every stamp of a field run: the stamps
``napari-deblend run`` cuts around sep's blends (and around single detections), with neighbours,
galaxies cut by the stamp's border and stamps larger than the 48 × 48 the finder learned on. The
simulated stamp sets of ``evaluate`` and ``validate_models.py`` hold centred blends only, so a
finder can do better there and worse here. This script detects a simulated field with sep as a
run does, cuts the stamp of each sep blend (``--groups blends``) or of each detection alone
offered to the deblender (``--groups singles``) exactly as a run does, lets each finder find sources on it, and matches
them to the true galaxies on the stamp (within 3 px, one to one; only galaxies brighter than
``--max-mag`` and at least 2 px inside the stamp count):

    python benchmarks/finder_on_field.py FIELD.fits --truth field_truth.ecsv \\
        --finders shipped runs/det/detector.pt@0.6

A finder is ``shipped`` or a ``detector.pt``, optionally followed by ``@THRESHOLD`` (default: the
threshold stored with the weights). Use a validation field (never the test field) to choose.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

MATCH = 3.0  # pixels
BORDER = 2.0  # pixels: true galaxies this close to the stamp's edge are not counted


def main() -> None:
    from astropy.table import Table

    import napari_deblend as nd
    from napari_deblend.blends import cut_stamp, stamp_noise
    from napari_deblend.candidates import find_candidates, psf_fwhm_pixels
    from napari_deblend.deblenders.detector import SourceFinder, find_peaks
    from napari_deblend.deblending import DEFAULT_STAMP, field_noise, stamp_side
    from napari_deblend.detection import run_detection
    from napari_deblend.presets import get_preset
    from napari_deblend.training.detector import match_counts

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("field")
    parser.add_argument("--truth", required=True, help="the field's truth catalogue (x, y, mag)")
    parser.add_argument("--finders", nargs="+", default=["shipped"], help="shipped or WEIGHTS.pt, each [@THRESHOLD]")
    parser.add_argument("--groups", choices=("blends", "singles"), default="blends")
    parser.add_argument("--max-mag", type=float, default=25.3, help="true galaxies fainter than this are not counted")
    args = parser.parse_args()

    field = nd.read_field(args.field)
    detection = run_detection(field)
    blends = nd.find_blends(detection.catalog, detection.segmentation)
    if args.groups == "blends":
        groups = blends
    else:  # the detections alone that a run offers to the deblender (its default --candidates)
        groups = find_candidates(detection.catalog, blends, detection_rms=detection.detection_rms,
                                 detection=detection.preset, shape=detection.segmentation.shape,
                                 fwhm_pixels=psf_fwhm_pixels(field.preset))
    truth = Table.read(args.truth)
    ty, tx, mag = (np.asarray(truth[c], float) for c in ("y", "x", "mag"))
    noise = field_noise(field, get_preset(field.preset).background_sigma)
    stamps, truths = [], []
    for group in groups:
        stamp = cut_stamp(detection.subtracted, group, size=stamp_side(group, DEFAULT_STAMP), mask=field.mask)
        (y0, x0), side = stamp.origin, stamp.data.shape[-1]
        inside = ((ty >= y0 + BORDER) & (ty < y0 + side - BORDER) & (tx >= x0 + BORDER) & (tx < x0 + side - BORDER)
                  & (mag < args.max_mag))
        stamps.append((np.where(stamp.mask, 0.0, stamp.data).sum(axis=0)[None].astype(np.float32),
                       stamp_noise(stamp, noise)))
        truths.append(np.stack([ty[inside] - y0, tx[inside] - x0], axis=1))
    n_true = sum(len(t) for t in truths)
    print(f"{args.field}: {len(groups)} stamps ({args.groups}), {n_true} true galaxies brighter than "
          f"{args.max_mag} on them")
    for spec in args.finders:
        weights, _, threshold = spec.partition("@")
        finder = SourceFinder("cpu", None if weights == "shipped" else weights)
        level = float(threshold) if threshold else finder.threshold
        found = extra = missed = 0
        for (image, sigma), true in zip(stamps, truths):
            peaks = find_peaks(finder.probability(image[None], np.array([sigma]))[0], level, finder.min_distance)
            hits, _ = match_counts(peaks, true, radius=MATCH)
            found, extra, missed = found + len(peaks), extra + len(peaks) - hits, missed + len(true) - hits
        print(f"{spec} (threshold {level:g}): {found} sources found, {extra} extra ({100 * extra / max(found, 1):.1f} %), "
              f"{missed} true galaxies missed ({100 * missed / max(n_true, 1):.1f} %)", flush=True)


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        main()
