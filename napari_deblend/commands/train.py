"""``napari-deblend train``: train a deblender on simulated blends (CPU or GPU)."""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path

from ..deblenders.checkpoints import file_sha256
from ..errors import DeblendInputError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "deblenders" / "weights"
TRAINABLE = ("peeling", "peeling-joint", "peeling-calibration", "peeling-verifier", "unet", "vae", "detector",
             "vae-verifier", "unet-verifier")
DEFAULT_BATCH_SIZE = {"peeling": 32, "peeling-joint": 64, "peeling-calibration": 256, "peeling-verifier": 256,
                      "unet": 64, "vae": 64, "detector": 64}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``train`` sub-command."""
    p = subparsers.add_parser(
        "train",
        help="train a deblender on simulated GalSim blends",
        description="Train a deblender on blends from the built-in simulator (a realistic mix of morphologies by "
        "default, optionally with real galaxies from a pool). "
        "Periodic checkpoints and validation metrics go to OUT; --resume continues a run.",
    )
    p.add_argument("model", help=f"model to train: {', '.join(TRAINABLE)}")
    p.add_argument("--preset", default="lsst-i", help="survey preset of the simulations")
    p.add_argument("--minutes", type=float, default=40.0, help="wall-clock training budget")
    p.add_argument("--steps", type=int, default=None,
                   help="a step budget instead of --minutes: exactly this many optimiser steps in all "
                        "(reproducible short runs; peeling-calibration: at most this many per member)")
    p.add_argument("--device", default="auto", help="auto, cuda, mps or cpu")
    p.add_argument("--out", required=True, help="output directory (checkpoints, history, weights)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--n-train", type=int, default=60_000, help="simulated training stamps (cached in OUT/cache)")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 for peeling, 64 for unet")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="simulation worker processes")
    p.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 1e-3, 2e-4 for peeling-joint; use ~3e-4 with --init)")
    p.add_argument("--init", help="warm start from weights of the same model (.pt), e.g. the shipped ones, to fine-tune; "
                                  "peeling-joint: the peeling weights whose first pass it refines (default: the shipped ones)")
    p.add_argument("--no-symmetric", action="store_true", help="peeling only: train without the symmetric loss (ablation)")
    p.add_argument("--flux-weight", type=float, default=None,
                   help="peeling and peeling-joint: weight of a relative-flux term |ΣRDN − Σtrue| / Σtrue in the "
                        "image loss (default 0, 0.05 for peeling-joint)")
    p.add_argument("--image-loss", choices=("l1", "noise-rms"), default=None,
                   help="peeling and peeling-joint: the RDN's image loss: l1 (default for peeling) or noise-rms "
                        "(root mean square of the residual in units of each pixel's noise; default for peeling-joint)")
    p.add_argument("--refine-width", type=int, default=0,
                   help="peeling only: channels of a full-resolution detail refiner grafted onto the RDN (0: none; "
                        "16 for 95 minutes gained 0.1 point of flux scatter, see the README)")
    p.add_argument("--blocks", type=int, default=None,
                   help="peeling only: residual dense blocks of the RDN (default: as many as the --init weights have, "
                        "6 without); --init weights with fewer are grown, starting from their exact output")
    p.add_argument("--texture-leftover", type=float, default=0.0, metavar="SHARE",
                   help="peeling only: a peeled galaxy leaves up to this share of its fine structure (knots, arms) "
                        "in the training residuals, so the counter learns it holds no galaxy (default 0)")
    p.add_argument("--counter-residual-weight", type=float, default=0.0, metavar="W",
                   help="peeling only: weight of the counter's loss on the RDN's own residuals in the joint phase "
                        "(what it sees after each peel at inference; default 0)")
    p.add_argument("--phases", type=float, nargs=3, default=None, metavar=("RDN", "COUNTER", "JOINT"),
                   help="peeling only: shares of the budget for the RDN, the counter and the joint fine-tuning "
                        "(default 0.7 0.12 0.18)")
    p.add_argument("--vae-share", type=float, default=None, metavar="SHARE",
                   help="vae only: share of the budget for the VAE itself before the deblending encoder (default "
                        "0.4; 0 with --init, which then keeps the VAE: give a share to fine-tune it on the mix too)")
    p.add_argument("--data-sweeps", type=int, default=0,
                   help="peeling-joint only: joint sweeps (of the --init weights' joint refiner, which training then "
                        "goes on from) whose outputs are also training samples (default 0: the first pass only)")
    p.add_argument("--joint-init", metavar="PEELING.pt",
                   help="peeling-joint only: start from the joint refiner of these peeling weights (e.g. the shipped "
                        "refiner, fine-tuned on the first pass of retrained --init weights)")
    p.add_argument("--continue-joint", action="store_true",
                   help="peeling-joint only: fine-tune the --init weights' joint refiner (e.g. with another "
                        "--flux-weight) instead of starting from their RDN sweep")
    p.add_argument("--field-like", type=float, default=0.0, metavar="SHARE",
                   help="detector and the *-verifier models: share of training stamps composed like a field run's "
                        "(galaxies moved off the centre, a neighbour's galaxies at and across the border; default 0)")
    p.add_argument("--morphology", default="realistic", metavar="MIX",
                   help="morphology mix of the simulated galaxies: realistic (default), parametric (bulge+disk only) "
                        "or weights such as 'bulge_disk=0.5,knots=0.5'")
    p.add_argument("--real-pool", metavar="DIR",
                   help="real-galaxy pool (`napari-deblend real-pool build`): its train split joins the mix "
                        "(its validation split the run's validation)")
    p.add_argument("--real-weight", type=float, default=0.3,
                   help="with --real-pool: share of the pool's galaxies in the mix (default 0.3)")
    p.add_argument("--real-galaxies", metavar="DIR",
                   help="export-training folder: its clean isolated galaxies join the parametric ones as blend "
                        "members; without --init, fine-tunes the shipped weights")
    p.add_argument("--real-fraction", type=float, default=None,
                   help="with --real-galaxies: fraction of training galaxies that are real (default 0.5)")
    p.add_argument("--install", action="store_true",
                   help="copy the trained weights into the package (napari_deblend/deblenders/weights) with a model card")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train; print validation lines; optionally install the weights and model card."""
    if args.model not in TRAINABLE:
        raise DeblendInputError(f"cannot train {args.model!r}: expected one of {', '.join(TRAINABLE)}")
    joint = args.model == "peeling-joint"
    if args.model in ("peeling-calibration", "peeling-verifier", "vae-verifier", "unet-verifier"):
        return _run_peeling_perceptrons(args)
    if args.lr is None:
        args.lr = 2e-4 if joint else 1e-3
    if args.flux_weight is None:
        args.flux_weight = 0.05 if joint else 0.0
    if args.image_loss is None:
        args.image_loss = "noise-rms" if joint else "l1"
    _check_budget(args)
    if args.n_train < 100:
        raise DeblendInputError(f"--n-train={args.n_train}: expected at least 100 stamps")
    if args.model == "peeling-joint" and (args.refine_width or args.phases or args.blocks is not None
                                          or args.no_symmetric or getattr(args, "real_galaxies", None)):
        raise DeblendInputError("peeling-joint trains the joint refiner of the peeling weights given by --init "
                                "(default: the shipped ones); --refine-width, --phases, --blocks, --no-symmetric "
                                "and --real-galaxies belong to `train peeling`")
    if getattr(args, "data_sweeps", 0) and args.model != "peeling-joint":
        raise DeblendInputError(f"--data-sweeps: only peeling-joint has it, not {args.model!r}")
    if getattr(args, "joint_init", None) and args.model != "peeling-joint":
        raise DeblendInputError(f"--joint-init: only peeling-joint has it, not {args.model!r}")
    if getattr(args, "continue_joint", False) and args.model != "peeling-joint":
        raise DeblendInputError(f"--continue-joint: only peeling-joint has it, not {args.model!r}")
    if getattr(args, "data_sweeps", 0) < 0:
        raise DeblendInputError(f"--data-sweeps={args.data_sweeps}: expected 0 or a positive number of sweeps")
    if args.flux_weight and args.model not in ("peeling", "peeling-joint"):
        raise DeblendInputError(f"--flux-weight: only peeling has it, not {args.model!r}")
    if args.flux_weight < 0:
        raise DeblendInputError(f"--flux-weight={args.flux_weight}: expected a weight >= 0")
    if args.model not in ("peeling", "peeling-joint") and (args.refine_width or args.phases or args.image_loss != "l1"):
        raise DeblendInputError(f"--refine-width / --phases / --image-loss: only peeling has them, not {args.model!r}")
    if args.model not in ("peeling", "peeling-joint") and args.blocks is not None:
        raise DeblendInputError(f"--blocks: only peeling has it, not {args.model!r}")
    if args.blocks is not None and args.blocks < 1:
        raise DeblendInputError(f"--blocks={args.blocks}: expected a positive number of residual dense blocks")
    if args.refine_width < 0:
        raise DeblendInputError(f"--refine-width={args.refine_width}: expected 0 (no refiner) or a number of channels")
    if args.phases and (min(args.phases) < 0 or sum(args.phases) <= 0):
        raise DeblendInputError(f"--phases {' '.join(map(str, args.phases))}: expected three shares >= 0, not all 0")
    if args.counter_residual_weight and args.model != "peeling":
        raise DeblendInputError(f"--counter-residual-weight: only peeling has it, not {args.model!r}")
    if args.counter_residual_weight < 0:
        raise DeblendInputError(f"--counter-residual-weight={args.counter_residual_weight}: expected a weight >= 0")
    if args.field_like and (args.model != "detector" or not 0.0 <= args.field_like <= 1.0):
        raise DeblendInputError(f"--field-like={args.field_like}: only detector and the verifiers have it, "
                                "a share from 0 to 1")
    if args.vae_share is not None and (args.model != "vae" or not 0.0 <= args.vae_share < 1.0):
        raise DeblendInputError(f"--vae-share={args.vae_share}: only vae has it, a share from 0 to below 1")
    if args.texture_leftover and args.model != "peeling":
        raise DeblendInputError(f"--texture-leftover: only peeling has it, not {args.model!r}")
    if not 0.0 <= args.texture_leftover <= 1.0:
        raise DeblendInputError(f"--texture-leftover={args.texture_leftover}: expected a share from 0 to 1")
    if args.no_symmetric and args.model != "peeling":
        raise DeblendInputError(f"--no-symmetric: only peeling has a symmetric loss, not {args.model!r}")
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH_SIZE[args.model]
    real = _real_galaxy_options(args)
    mix = _mix_options(args)
    if args.batch_size < 1:
        raise DeblendInputError(f"--batch-size={args.batch_size}: expected a positive number of stamps")
    from tqdm import tqdm

    if args.model == "unet":
        from ..training.unet import UNetTrainConfig, train_unet

        config = UNetTrainConfig(
            preset=args.preset, minutes=args.minutes, device=args.device, n_train=args.n_train,
            batch_size=args.batch_size, seed=args.seed, workers=args.workers, lr=args.lr, init=args.init, **real,
            **mix,
        )
        train = train_unet
    elif args.model in ("vae", "detector"):
        if real:
            raise DeblendInputError(f"--real-galaxies: not supported for {args.model!r} yet (peeling, unet)")
        from ..training import detector, vae

        module = vae if args.model == "vae" else detector
        make_config = vae.VAETrainConfig if args.model == "vae" else detector.DetectorTrainConfig
        config = make_config(
            preset=args.preset, minutes=args.minutes, device=args.device, n_train=args.n_train,
            batch_size=args.batch_size, seed=args.seed, workers=args.workers, lr=args.lr, init=args.init, **mix,
        )
        if args.vae_share is not None:
            config.vae_share = args.vae_share
        if args.field_like:
            config.field_like = args.field_like
        train = module.train_vae if args.model == "vae" else module.train_detector
    elif args.model == "peeling-joint":
        from ..training.peeling_joint import JointTrainConfig, train_joint

        config = JointTrainConfig(
            preset=args.preset, minutes=args.minutes, device=args.device, n_train=args.n_train,
            batch_size=args.batch_size, seed=args.seed, workers=args.workers, lr=args.lr, init=args.init,
            flux_weight=args.flux_weight, image_loss=args.image_loss, data_sweeps=args.data_sweeps,
            continue_joint=args.continue_joint, joint_init=args.joint_init, **mix,
        )
        train = train_joint
    else:
        from ..training.peeling import PeelingTrainConfig, train_peeling

        config = PeelingTrainConfig(
            preset=args.preset, minutes=args.minutes, device=args.device, n_train=args.n_train,
            batch_size=args.batch_size, seed=args.seed, workers=args.workers, symmetric=not args.no_symmetric,
            lr=args.lr, init=args.init, flux_weight=args.flux_weight, refine_width=args.refine_width,
            blocks=args.blocks, image_loss=args.image_loss, texture_leftover=args.texture_leftover,
            counter_residual_weight=args.counter_residual_weight, **real, **mix,
        )
        if args.phases:
            config.phase_fractions = tuple(args.phases)
        train = train_peeling
    config.max_steps = args.steps
    bar = tqdm(total=1000, desc=f"train {args.model}", unit="‰", disable=None)

    def progress(fraction: float) -> None:
        bar.update(int(fraction * 1000) - bar.n)

    weights = train(config, args.out, resume=args.resume, log=bar.write, progress=progress)
    bar.close()
    if args.install:
        if args.model == "peeling-joint":
            install_joint_refiner(weights, asdict(config), Path(args.out), command=training_command(args))
        else:
            install_weights(weights, args.model, asdict(config), Path(args.out), command=training_command(args))
    return 0


def _run_peeling_perceptrons(args: argparse.Namespace) -> int:
    """``train peeling-calibration`` / ``peeling-verifier`` / ``vae-verifier`` / ``unet-verifier``: fit the flux
    calibration or the split verifier of the --init (default: shipped) weights of that model."""
    from ..training.flux_calibration import CalibrationTrainConfig, train_calibration
    from ..training.split_verifier import VerifierTrainConfig, train_verifier

    verifier = args.model.endswith("-verifier")
    owner = args.model.removesuffix("-verifier").removesuffix("-calibration")  # whose weights: peeling, vae, unet
    what = "split verifier" if verifier else "flux calibration"

    given = [name for name, used in (("--resume", args.resume), ("--no-symmetric", args.no_symmetric),
                                     ("--flux-weight", args.flux_weight is not None),
                                     ("--image-loss", args.image_loss is not None),
                                     ("--refine-width", args.refine_width), ("--blocks", args.blocks is not None),
                                     ("--phases", args.phases), ("--data-sweeps", args.data_sweeps),
                                     ("--continue-joint", args.continue_joint),
                                     ("--real-galaxies", getattr(args, "real_galaxies", None))) if used]
    if given:
        raise DeblendInputError(f"{', '.join(given)}: not options of {args.model}, which fits the {what} "
                                f"of the {owner} weights given by --init (default: the shipped ones)")
    if args.field_like and (not verifier or not 0.0 <= args.field_like <= 1.0):
        raise DeblendInputError(f"--field-like={args.field_like}: only detector and the verifiers have it, "
                                "a share from 0 to 1")
    _check_budget(args)
    config_class = VerifierTrainConfig if verifier else CalibrationTrainConfig
    defaults = config_class()
    if args.n_train < 10:
        raise DeblendInputError(f"--n-train={args.n_train}: expected at least 10 blends")
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH_SIZE["peeling-verifier" if verifier else args.model]
    if args.lr is None:
        args.lr = defaults.lr
    config = config_class(preset=args.preset, minutes=args.minutes, device=args.device,
                                    n_train=args.n_train, n_val=min(defaults.n_val, max(20, args.n_train // 20)),
                                    batch_size=args.batch_size, seed=args.seed,
                                    workers=args.workers, lr=args.lr, init=args.init, max_steps=args.steps,
                                    **_mix_options(args),
                                    **({"model": owner, "field_like": args.field_like} if verifier else {}))
    if verifier:
        weights = train_verifier(config, args.out)
    else:
        weights = train_calibration(config, args.out)
    if args.install:
        install_peeling_perceptrons(weights, asdict(config), Path(args.out), command=training_command(args),
                                    section="split_verifier" if verifier else "flux_calibration", model=owner)
    return 0


def _check_budget(args: argparse.Namespace) -> None:
    if args.minutes <= 0:
        raise DeblendInputError(f"--minutes={args.minutes}: expected a positive number of minutes")
    if args.steps is not None and args.steps < 1:
        raise DeblendInputError(f"--steps={args.steps}: expected a positive number of optimiser steps")


def training_command(args: argparse.Namespace) -> str:
    """The command line that reproduces this training run (for the model card)."""
    parts = ["napari-deblend train", args.model, f"--preset {args.preset}", f"--minutes {args.minutes:g}",
             f"--device {args.device}", f"--out {args.out}", f"--n-train {args.n_train}",
             f"--seed {args.seed}", f"--workers {args.workers}"]
    if getattr(args, "steps", None) is not None:
        parts.append(f"--steps {args.steps}")
    if args.batch_size is not None:
        parts.append(f"--batch-size {args.batch_size}")
    if args.lr is not None and args.lr != 1e-3:
        parts.append(f"--lr {args.lr:g}")
    if args.init:
        parts.append(f"--init {args.init}")
    if args.no_symmetric:
        parts.append("--no-symmetric")
    if getattr(args, "flux_weight", 0.0):
        parts.append(f"--flux-weight {args.flux_weight:g}")
    if args.model in ("peeling", "peeling-joint") and getattr(args, "image_loss", None) not in (None, "l1"):
        parts.append(f"--image-loss {args.image_loss}")
    if args.model == "peeling" and getattr(args, "refine_width", 0):
        parts.append(f"--refine-width {args.refine_width}")
    if args.model == "peeling" and getattr(args, "counter_residual_weight", 0.0):
        parts.append(f"--counter-residual-weight {args.counter_residual_weight:g}")
    if args.model == "peeling" and getattr(args, "texture_leftover", 0.0):
        parts.append(f"--texture-leftover {args.texture_leftover:g}")
    if args.model == "peeling" and getattr(args, "blocks", None) is not None:
        parts.append(f"--blocks {args.blocks}")
    if getattr(args, "vae_share", None) is not None:
        parts.append(f"--vae-share {args.vae_share:g}")
    if getattr(args, "field_like", 0.0):
        parts.append(f"--field-like {args.field_like:g}")
    if getattr(args, "data_sweeps", 0):
        parts.append(f"--data-sweeps {args.data_sweeps}")
    if getattr(args, "continue_joint", False):
        parts.append("--continue-joint")
    if getattr(args, "joint_init", None):
        parts.append(f"--joint-init {args.joint_init}")
    if getattr(args, "phases", None):
        parts.append("--phases " + " ".join(f"{share:g}" for share in args.phases))
    if getattr(args, "real_galaxies", None):
        parts.append(f"--real-galaxies {args.real_galaxies} --real-fraction {args.real_fraction:g}")
    parts.append(f"--morphology {getattr(args, 'morphology', 'realistic')}")
    if getattr(args, "real_pool", None):
        parts.append(f"--real-pool {args.real_pool} --real-weight {args.real_weight:g}")
    return " ".join(parts + ["--install"])


def _mix_options(args: argparse.Namespace) -> dict:
    """Check ``--morphology`` / ``--real-pool`` / ``--real-weight`` (the pool is read here, before training)."""
    from ..training.data_mix import DataMix

    morphology = getattr(args, "morphology", "realistic")
    pool = getattr(args, "real_pool", None)
    weight = float(getattr(args, "real_weight", 0.3))
    if pool:
        from ..simulate import resolve_pool

        for split in ("train", "validation"):
            resolve_pool(pool, args.preset, split)
    DataMix(morphology, pool, weight).weights()  # an unknown family or a bad weight fails here
    return {"morphology": morphology, "real_pool": str(Path(pool).expanduser().resolve()) if pool else None,
            "real_weight": weight}


def _data_mix(config: dict) -> dict:
    from ..training.data_mix import data_mix

    return data_mix(argparse.Namespace(**config)).describe()


def data_description(config: dict, what: str) -> str:
    """The model card's words for the simulated data a run learned from."""
    mix = _data_mix(config)
    families = ", ".join(f"{name} {weight:.0%}" for name, weight in mix["family_weights"].items())
    pool = f"; real galaxies from the pool {mix['real_pool']} (train split)" if mix["real_pool"] else ""
    return f"{what} from napari_deblend.simulate, morphology mix {mix['morphology']!r} ({families}){pool}"


def _real_galaxy_options(args: argparse.Namespace) -> dict:
    """Check ``--real-galaxies`` / ``--real-fraction``; default ``--init`` to the shipped weights (fine-tuning)."""
    if not getattr(args, "real_galaxies", None):
        if getattr(args, "real_fraction", None) is not None:
            raise DeblendInputError("--real-fraction needs --real-galaxies DIR (an export-training folder)")
        return {}
    if args.real_fraction is None:
        args.real_fraction = 0.5
    if not 0.0 < args.real_fraction <= 1.0:
        raise DeblendInputError(f"--real-fraction={args.real_fraction}: expected a fraction in (0, 1]")
    folder = Path(args.real_galaxies)
    if not (folder / "index.ecsv").exists():
        raise DeblendInputError(f"--real-galaxies {folder}: no index.ecsv there; make it with "
                                "`napari-deblend export-training --labels DB --out DIR`")
    if not args.init and not args.resume:
        shipped = WEIGHTS_DIR / f"{args.model}.pt"
        if shipped.exists():
            args.init = str(shipped)
            print(f"fine-tuning from the shipped weights {shipped} (give --init to start elsewhere)")
    return {"real_galaxies": str(folder), "real_fraction": float(args.real_fraction)}


def git_commit() -> str:
    """The repository's current commit (or "unknown")."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def inference_settings(model: str) -> dict:
    """How the deblender uses the weights (part of what the card's metrics depend on)."""
    if model == "peeling":
        from ..deblenders.peeling import PeelingDeblender
        from ..deblenders.refit import BROADEN_PX

        return {"max_steps": PeelingDeblender.max_steps, "refine_sweeps": PeelingDeblender.refine_sweeps,
                "joint_sweeps": PeelingDeblender.joint_sweeps, "joint_flips": PeelingDeblender.joint_flips,
                "precision": PeelingDeblender.precision,
                "refit_brightest": PeelingDeblender.refit_brightest, "refit_broaden_px": BROADEN_PX,
                "calibrate_flux": PeelingDeblender.calibrate_flux, "calibrate_single": PeelingDeblender.calibrate_single,
                "merge_inner": PeelingDeblender.merge_inner, "merge_level": PeelingDeblender.merge_level,
                "merge_peak_ratio": PeelingDeblender.merge_peak_ratio,
                "merge_flux_ratio": PeelingDeblender.merge_flux_ratio,
                "give_back_pieces": PeelingDeblender.give_back_pieces, "split_threshold": PeelingDeblender.split_threshold,
                "refine_with": "joint_sweeps of the joint refiner when the weights have one, else refine_sweeps "
                               "of the RDN"}
    if model == "vae":
        from ..deblenders.detector import SourceFinder
        from ..deblenders.vae import VAEDeblender

        finder = SourceFinder("cpu")  # its threshold and peak spacing are stored with its weights
        return {"refine_sweeps": VAEDeblender.refine_sweeps, "residual_detection": VAEDeblender.residual_detection,
                "residual_threshold": VAEDeblender.residual_threshold, "fit_amplitudes": VAEDeblender.fit_amplitudes,
                "redistribute_flux": VAEDeblender.redistribute_flux,
                "redistribution_level": VAEDeblender.redistribution_level,
                "min_split_probability": VAEDeblender.min_split_probability,
                "pieces_to_host": VAEDeblender.pieces_to_host,
                "source_finder": f"{finder.weights.name} (threshold {finder.threshold:g}, "
                                 f"min_distance {finder.min_distance})"}
    return {}


def _training_record(config: dict, run_dir: Path, command: str) -> dict:
    """What a model card records of a training run: command, minutes, device, versions, config, curve."""
    import torch

    from ..deblenders.base import resolve_device

    path = run_dir / "history.jsonl"
    history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    return {
        "training_command": command,
        "minutes": config["minutes"],
        "device": resolve_device(config["device"]),
        "torch": torch.__version__,
        "git_commit": git_commit(),
        "config": config,
        "validation_curve": history,
    }


def install_joint_refiner(weights: Path, config: dict, run_dir: Path, command: str) -> Path:
    """Install peeling weights with a joint refiner as the package's ``peeling.pt``; record it in the card.

    The card keeps the peeling networks' own training record and gains a
    ``joint_refiner`` section (command, minutes, validation curve, commit); its
    metrics are filled by ``evaluate`` as for any model.
    """
    target = WEIGHTS_DIR / "peeling.pt"
    shutil.copyfile(weights, target)
    card_path = target.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {"model": "peeling"}
    card["joint_refiner"] = {
        "data": data_description(config, f"{config['n_train']} blends of 2 and 3 galaxies")
                + f", noisy, run once through the first peeling pass of {_weights_name(config['init'])}; every "
                "predicted component matched to a true galaxy is a sample (target: that galaxy's noiseless image)",
        **_training_record(config, run_dir, command),
    }
    if "total_minutes" in card:
        card["total_minutes"] = card["total_minutes"] + config["minutes"]
    card["size_bytes"] = target.stat().st_size
    card["inference"] = inference_settings("peeling")
    card["sha256"] = file_sha256(target)  # checked at every load (deblenders/checkpoints.py)
    card_path.write_text(json.dumps(card, indent=2))
    print(f"installed {target} and {card_path}")
    return target


def install_peeling_perceptrons(weights: Path, config: dict, run_dir: Path, command: str,
                                section: str = "flux_calibration", model: str = "peeling") -> Path:
    """Install ``model`` weights with a new flux calibration or split verifier as the package's ``<model>.pt``.

    The card gains a ``flux_calibration`` (or ``split_verifier``) section (data,
    command, the validation figures); its metrics are filled by ``evaluate`` as for any model.
    """
    target = WEIGHTS_DIR / f"{model}.pt"
    shutil.copyfile(weights, target)
    card_path = target.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {"model": model}
    record = _training_record(config, run_dir, command)
    record["validation"] = record.pop("validation_curve")
    samples = ("every fainter component of a stamp of two or more is a sample (target: 1 when it is matched to "
               "a true galaxy, 0 for a piece of one)" if section == "split_verifier" else
               "every component matched to a true galaxy is a sample (target: log of the true over the component's "
               "flux)")
    card[section] = {
        "data": data_description(config, f"{config['n_train']} blends of 1-3 galaxies (seeds of their own)")
                + f", noisy, deblended by the {model} weights {_weights_name(config['init'], model)} with no "
                f"{section.replace('_', ' ')}; {samples}",
        **record,
    }
    card["size_bytes"] = target.stat().st_size
    card["inference"] = inference_settings(model)
    card["sha256"] = file_sha256(target)  # checked at every load (deblenders/checkpoints.py)
    card_path.write_text(json.dumps(card, indent=2))
    print(f"installed {target} and {card_path}")
    return target


def _weights_name(init: str | None, model: str = "peeling") -> str:
    """How a card names the --init weights: the shipped file by name, others by their file name."""
    if not init:
        return f"shipped {model}.pt"
    path = Path(init)
    if path.resolve() == (WEIGHTS_DIR / f"{model}.pt").resolve():
        return f"shipped {model}.pt"
    return path.name


def install_weights(weights: Path, model: str, config: dict, run_dir: Path, command: str) -> Path:
    """Copy weights into the package and write the model card (metrics are filled by ``evaluate``)."""
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    target = WEIGHTS_DIR / f"{model}.pt"
    shutil.copyfile(weights, target)
    card_path = target.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card.pop("joint_refiner", None)  # new peeling weights have none: train one with `train peeling-joint`
    card.update({
        "model": model,
        "preset": config["preset"],
        "data": data_description(config, f"{config['n_train']} noiseless blend stamps of 1-3 galaxies, "
                                         f"{config['stamp_size']} px, fresh noise every batch"),
        "data_mix": _data_mix(config),
        **_training_record(config, run_dir, command),
        "size_bytes": target.stat().st_size,
        "inference": inference_settings(model),
    })
    card["sha256"] = file_sha256(target)  # checked at every load (deblenders/checkpoints.py)
    card_path.write_text(json.dumps(card, indent=2))
    print(f"installed {target} and {card_path}")
    return target
