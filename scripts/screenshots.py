"""Regenerate the README's pictures from the shipped sample field and weights.

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/screenshots.py [--failure-blend 7]

Writes into docs/screenshots/: demo.png (the window of ``napari-deblend demo``, on the blend the
demo opens on), comparison_good.png (that blend's exported comparison figure: peeling, SExtractor,
truth) and comparison_failure.png (the same for --failure-blend, the README's lesson). For each
blend it prints the quality and how the components match the truth: check that the "good" one is
good and that the lesson still shows what the README says before committing new pictures.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "docs" / "screenshots"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--failure-blend", type=int, default=7, help="blend id of the sample field shown as a failure")
    parser.add_argument("--model", default="peeling")
    parser.add_argument("--no-window", action="store_true", help="only the comparison figures (no Xvfb needed)")
    args = parser.parse_args()

    from napari_deblend import deblend, detect, find_blends, measure, read_field
    from napari_deblend._sample_data import SAMPLE_FIELD, SAMPLE_TRUTH
    from napari_deblend.commands.demo import demo_blend
    from napari_deblend.plots import comparison_figure, save_figure
    from napari_deblend.truth import read_truth_catalog, truth_for_stamp

    field = read_field(SAMPLE_FIELD)
    catalog, segmentation = detect(field, preset="sextractor")
    blends = {blend.id: blend for blend in find_blends(catalog, segmentation)}
    truth = read_truth_catalog(SAMPLE_TRUTH)
    good = demo_blend(list(blends.values()))
    for name, blend_id in (("comparison_good.png", good), ("comparison_failure.png", args.failure_blend)):
        result = deblend(field, blends[blend_id], model=args.model, device="cpu")
        true = truth_for_stamp(truth, result.origin, result.blend.shape[-2:])
        table = measure(result, truth=true)
        n_true = 0 if true is None else len(true.positions)
        dflux = [round(float(v), 3) for v in table["dflux_frac"]] if "dflux_frac" in table.colnames else []
        print(f"{name}: blend {blend_id}, quality {result.quality}, {result.n_components} component(s), "
              f"{n_true} true galaxies in the stamp, Δf/f of the components {dflux}")
        save_figure(comparison_figure(result, truth=true), OUT / name, dpi=110)
    if not args.no_window:
        subprocess.run([sys.executable, "-m", "napari_deblend.cli", "demo", "--screenshot", str(OUT / "demo.png")],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
