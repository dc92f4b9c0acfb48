"""``napari-deblend evaluate``: compare deblenders on the fixed simulated test sets.

Each test set (``parametric``: bulge + disk galaxies; ``realistic``: the realistic morphology mix
and, with ``--real-pool``, real galaxies of the pool's test split) is written to ``OUT/<set>/``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import DeblendInputError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    from ..training.testsets import TEST_SETS

    p = subparsers.add_parser(
        "evaluate",
        help="evaluate deblenders on simulated blends (tables, report, figures)",
        description="Run deblenders on the same simulated blends (seeds reserved for evaluation), match "
        "their components to the truth within 3 px and write, per test set, OUT/<set>/components.ecsv, "
        "summary.json, report.md and PNG figures; print the Markdown tables.",
    )
    p.add_argument("--models", nargs="+", default=["peeling", "sextractor"], metavar="MODEL",
                   help="deblender names (default: peeling sextractor)")
    p.add_argument("--n", type=int, default=2000, help="blends per multiplicity (default 2000)")
    p.add_argument("--blends", type=int, nargs="+", default=[2, 3], metavar="K",
                   help="galaxies per blend, among 1 2 3 (default: 2 3)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--batch-size", type=int, default=64, help="stamps per batch (default 64)")
    p.add_argument("--test-sets", nargs="+", default=list(TEST_SETS), choices=TEST_SETS, metavar="SET",
                   help="parametric (bulge + disk) and/or realistic (the realistic morphology mix; with --real-pool, "
                        "real galaxies of the pool's test split too); default both")
    p.add_argument("--real-pool", default=None, metavar="DIR",
                   help="real-galaxy pool (`napari-deblend real-pool build`) whose test split joins the realistic set")
    p.add_argument("--seed", type=int, default=None, help="test-set seed (default: each set's reserved seed)")
    p.add_argument("--preset", default="lsst-i", help="survey preset (default lsst-i)")
    p.add_argument("--cache-dir", default=None, help="where test sets are cached (default OUT/testsets)")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    p.add_argument("--update-model-cards", action="store_true",
                   help="write the metrics into the models' cards (deblenders/weights/<name>.json)")
    p.set_defaults(func=run)


def check_args(args: argparse.Namespace) -> None:
    """Reject bad numbers before anything is simulated."""
    if args.n <= 0:
        raise DeblendInputError(f"--n {args.n}: expected a positive number of blends")
    bad = [k for k in args.blends if not 1 <= k <= 3]
    if bad:
        raise DeblendInputError(f"--blends {' '.join(map(str, args.blends))}: expected galaxies per blend among 1 2 3")
    if args.batch_size <= 0:
        raise DeblendInputError(f"--batch-size {args.batch_size}: expected a positive number of stamps")


def run(args: argparse.Namespace) -> int:
    """Evaluate, print the tables, optionally update the model cards."""
    from ..deblenders.base import get_deblender
    from ..training.evaluate import evaluate_models, markdown_tables, model_card_path, update_model_card
    from .train import inference_settings

    check_args(args)
    for name in args.models:  # unknown names: DeblendError listing the known ones
        get_deblender(name, device=args.device, preset=args.preset)

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    if args.real_pool:
        from ..simulate import resolve_pool

        resolve_pool(args.real_pool, args.preset, "test")  # a missing pool fails before anything is simulated
    for test_set in dict.fromkeys(args.test_sets):
        out = Path(args.out) / test_set
        summary = evaluate_models(
            args.models,
            n=args.n,
            blends=tuple(args.blends),
            out_dir=out,
            device=args.device,
            batch_size=args.batch_size,
            seed=args.seed,
            preset=args.preset,
            cache_dir=args.cache_dir or Path(args.out) / "testsets",
            figures=not args.no_figures,
            progress=progress,
            test_set=test_set,
            real_pool=args.real_pool,
        )
        print(f"## {test_set} test set\n")
        print(markdown_tables(summary))
        print(f"written to {out}: " + ", ".join(summary["files"].values()))
        if args.update_model_cards:
            for name in args.models:
                card = model_card_path(name, device=args.device, preset=args.preset)
                if card is None:
                    print(f"{name}: no model card to update", file=sys.stderr)
                    continue
                update_model_card(card, summary, name, inference=inference_settings(name) or None)
                print(f"{name}: {test_set} metrics written to {card}")
    return 0
