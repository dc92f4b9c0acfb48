"""Ablation: the peeling RDN trained with and without the symmetric loss, judged on near-equal-flux pairs.

Wang et al. (2021) name their failure: when two galaxies have similar fluxes, "the brightest" is
ambiguous and an RDN trained to return it learns to return a mix of the two. Our fix
(``training.peeling.rdn_loss``): when the fainter is within ``AMBIGUOUS_RATIO`` of the brighter in
flux, the loss is the smaller of the losses against either galaxy.

This script trains two RDNs from scratch for the same time on the same data and seeds, one with the
symmetric loss and one without (RDN pre-training only), plugs each into the shipped galaxy counter,
and evaluates both on the held-out 2-galaxy test set, on all pairs and on near-equal pairs
(true flux ratio 0.8–1.25). It prints a table; ``--out`` keeps the runs.

    python benchmarks/ablation_symmetric.py --minutes 12 --n 2000 --out runs/ablation
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def merged_weights(rdn_weights: Path, counter_weights: Path, out: Path) -> Path:
    """A peeling checkpoint with the RDN of one file and the counter of another."""
    import torch

    rdn = torch.load(rdn_weights, map_location="cpu", weights_only=True)
    counter = torch.load(counter_weights, map_location="cpu", weights_only=True)
    merged = {**counter, "rdn": rdn["rdn"], "rdn_config": rdn["rdn_config"]}
    torch.save(merged, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=12.0, help="training time of each of the two RDNs")
    parser.add_argument("--n", type=int, default=2000, help="2-galaxy test blends")
    parser.add_argument("--n-train", type=int, default=60_000)
    parser.add_argument("--out", default="runs/ablation")
    parser.add_argument("--testsets", default="runs/eval/testsets", help="test-set cache (shared with evaluate)")
    args = parser.parse_args()

    from napari_deblend.deblenders.peeling import WEIGHTS_DIR, PeelingDeblender
    from napari_deblend.training.evaluate import evaluate_model, flux_stats, make_test_set, near_equal_mask
    from napari_deblend.training.peeling import PeelingTrainConfig, train_peeling

    out = Path(args.out)
    test = make_test_set(n=args.n, n_galaxies=2, cache_dir=args.testsets)
    rows = []
    for symmetric in (True, False):
        run = out / ("symmetric" if symmetric else "plain")
        config = PeelingTrainConfig(minutes=args.minutes, n_train=args.n_train, symmetric=symmetric, device="cpu",
                                    phase_fractions=(1.0, 0.0, 0.0), batch_size=64, seed=0)
        train_peeling(config, run)
        weights = merged_weights(run / "peeling.pt", WEIGHTS_DIR / "peeling.pt", run / "peeling_with_counter.pt")
        table, _ = evaluate_model(PeelingDeblender(device="cpu", weights=weights), test, device="cpu")
        near = near_equal_mask(table)
        for subset, mask in (("all pairs", np.ones(len(table), bool)), ("near-equal pairs", near)):
            for rank in (0, 1):
                sel = mask & (np.asarray(table["rank"]) == rank)
                stats = flux_stats(np.asarray(table["dflux_frac"])[sel])
                rows.append((("symmetric" if symmetric else "plain"), subset, rank + 1, int(sel.sum()),
                             float(np.asarray(table["matched"])[sel].mean()), stats["bias"], stats["scatter"]))
    print(f"\nRDN trained {args.minutes:g} min each (pre-training only), shipped counter, {args.n} 2-galaxy test blends")
    print(f"{'loss':<10} {'subset':<17} {'rank':>4} {'n':>5} {'recovered':>9} {'bias':>7} {'scatter':>8}")
    for loss, subset, rank, n, rec, bias, scatter in rows:
        print(f"{loss:<10} {subset:<17} {rank:>4} {n:>5} {rec:>9.1%} {bias:>+7.3f} {scatter:>8.3f}")


if __name__ == "__main__":
    main()
