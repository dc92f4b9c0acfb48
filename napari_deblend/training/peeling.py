"""Training of the peeling deblender (RDN + galaxy counter), CPU-friendly.

Data: noiseless components of parametric GalSim blends (1-3 galaxies,
brightest first) are simulated once into cached shards (``simulate_blends``
with worker processes); every batch then draws fresh noise, a random peeling
depth (the true residual after removing the ``d`` brightest galaxies, with a
few per cent of subtraction error left behind) and a random flip/rotation, so
the model never waits on data and never sees the same noisy stamp twice.

Phases (as in Wang et al. 2021): (1) pre-train the RDN, (2) pre-train the
counter, (3) fine-tune both with the counter's loss on the residual
``x - RDN(x)`` added to the RDN loss with a small weight ``lambda``.

Symmetric loss: when the two brightest galaxies are within ``AMBIGUOUS_RATIO``
in flux, "the brightest" is ill-defined; the RDN loss is then the smaller of
its losses against either galaxy, so the network is not pushed to return an
average of the two (the failure named in the paper).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from ..deblenders.checkpoints import load_training_checkpoint
from ..deblenders.nets import RDN, GalaxyCounter, normalise
from ..errors import DeblendInputError
from ..presets import get_preset
from .config import TrainConfig
from .data_mix import DataMix, data_mix

TRAIN_SEED_BASE = 1_000  # the evaluation set uses training.evaluate.EVAL_SEED, never this range
VALIDATION_SEED = 999_999
AMBIGUOUS_RATIO = 0.7  # flux ratio (fainter / brighter) above which the brightest is ambiguous
MAX_GALAXIES = 3
#: What a resumable peeling checkpoint (OUT/checkpoint.pt) holds.
PEELING_RESUME_KEYS = {"rdn", "rdn_live", "rdn_config", "counter", "opt_rdn", "opt_counter", "elapsed", "step"}


@dataclass
class PeelingTrainConfig(TrainConfig):
    """Options of ``napari-deblend train peeling``: the shared ones and the losses and phases."""

    minutes: float = 40.0
    batch_size: int = 32
    # the counter's cross-entropy (~0.5) dwarfs the RDN's L1 loss (~0.004): lambda 0.05 let it dominate
    # and undo the RDN pre-training (flux scatter 7.1% -> 9.9%); 5e-4 keeps it a small correction
    joint_lambda: float = 5e-4
    symmetric: bool = True
    # weight of a relative-flux term, |Σ pred − Σ target| / Σ target, added to the image loss (0: none)
    flux_weight: float = 0.0
    phase_fractions: tuple[float, float, float] = (0.7, 0.12, 0.18)
    real_galaxies: str | None = None  # export-training folder whose clean isolated galaxies join the sources
    real_fraction: float = 0.5  # probability that a training galaxy is a real one (with real_galaxies)
    refine_width: int = 0  # channels of the RDN's full-resolution detail refiner (0: none; see nets.py)
    # the RDN's residual dense blocks (D); None: as many as the --init weights (or the checkpoint resumed) have,
    # 6 without them; --init weights with fewer are grown (see grow_blocks)
    blocks: int | None = None
    image_loss: str = "l1"  # "l1" or "noise-rms" (see image_loss)
    texture_leftover: float = 0.0  # up to this share of a peeled galaxy's fine structure is left behind (BatchMaker)
    # weight of the counter's loss on the RDN's own residuals (the network's output held fixed) in the joint phase:
    # what the counter sees at inference after each peel (0: only the joint_lambda term, through the RDN too)
    counter_residual_weight: float = 0.0


# ---- data ----------------------------------------------------------------------------------------


def _simulate_components(n: int, stamp_size: int, preset: str, seed: int, workers: int, mix: DataMix,
                         split: str) -> dict[str, np.ndarray]:
    from ..simulate import simulate_blends

    rng = np.random.default_rng(seed)
    n_galaxies = rng.choice([1, 2, 3], size=n, p=[0.2, 0.45, 0.35])
    parts = {}
    for k in (1, 2, 3):
        count = int((n_galaxies == k).sum())
        if count:
            parts[k] = simulate_blends(
                count, n_galaxies=k, stamp_size=stamp_size, preset=preset, seed=seed * 10 + k,
                noise=False, n_workers=workers, **mix.simulate_kwargs(split),
            )
    comps = np.zeros((n, MAX_GALAXIES, stamp_size, stamp_size), np.float32)
    n_comp = np.zeros(n, np.int64)
    for k, blendset in parts.items():
        rows = np.flatnonzero(n_galaxies == k)
        comps[rows, :k] = blendset.components[:, :k, 0]
        n_comp[rows] = k
    return {"components": comps, "n_components": n_comp}


def load_or_simulate(
    n: int, stamp_size: int, preset: str, seed: int, workers: int, cache_dir: Path | None, log: Callable = print,
    mix: DataMix | None = None, split: str = "train",
) -> dict[str, np.ndarray]:
    """Noiseless training components ``(n, 3, S, S)`` (brightest first) and counts, cached as ``.npz``.

    ``mix`` is the morphology mix and real-galaxy pool (default: parametric galaxies only);
    ``split`` the pool's split (``train`` or ``validation``).
    """
    from .evaluate import _simulator_fingerprint

    mix = mix or DataMix("parametric")

    def simulate() -> dict[str, np.ndarray]:
        start = time.perf_counter()
        data = _simulate_components(n, stamp_size, preset, seed, workers, mix, split)
        log(f"simulated {n} stamps ({mix.morphology}) in {time.perf_counter() - start:.0f} s")
        return data

    tag = "" if mix.tag() == "parametric" else f"_{mix.tag()}_{split}"
    return cached_npz(cache_dir, f"peeling_{preset}_{stamp_size}_{n}_{seed}_{_simulator_fingerprint()}{tag}.npz",
                      simulate)


def cached_npz(cache_dir: Path | None, name: str, make: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The arrays cached as ``cache_dir/name`` (``.npz``), or ``make()``'s, then cached there (no cache if None)."""
    path = None if cache_dir is None else Path(cache_dir) / name
    if path is not None and path.exists():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    data = make()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **data)
    return data


class BatchMaker:
    """Draws training batches from noiseless components: noise, peeling depth, flips, all on the fly.

    A galaxy peeled off leaves a few per cent of its light behind and, with ``texture`` > 0, up to
    that fraction of its fine structure (the galaxy minus a blurred copy: knots, arms, clumps), as a
    network that returns a smoother galaxy would: the counter learns that such a residual holds no
    galaxy.
    """

    def __init__(self, data: dict[str, np.ndarray], sigma: float, seed: int, texture: float = 0.0) -> None:
        self.components = torch.from_numpy(data["components"])
        self.n_components = torch.from_numpy(data["n_components"])
        self.sigma = float(sigma)
        self.generator = torch.Generator().manual_seed(seed)
        self.texture = float(texture)
        radius = 4
        kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float32) / 1.5) ** 2)
        self._blur = (kernel / kernel.sum()).view(1, 1, 1, -1)

    def _fine_structure(self, comps: torch.Tensor) -> torch.Tensor:
        """Each component minus its copy blurred by a 1.5-pixel Gaussian."""
        flat = comps.reshape(-1, 1, *comps.shape[-2:])
        pad = self._blur.shape[-1] // 2
        blurred = F.conv2d(F.pad(flat, (pad, pad, 0, 0), mode="replicate"), self._blur)
        blurred = F.conv2d(F.pad(blurred, (0, 0, pad, pad), mode="replicate"), self._blur.transpose(-1, -2))
        return (flat - blurred).reshape(comps.shape)

    def __len__(self) -> int:
        return len(self.components)

    def batch(self, size: int, peel_probability: float = 0.4, empty_fraction: float = 0.0) -> dict[str, torch.Tensor]:
        """One batch: ``x`` (B,1,S,S) noisy input, ``target``/``second`` (B,1,S,S), ``count`` (B,), ``ratio`` (B,)."""
        g = self.generator
        idx = torch.randint(len(self), (size,), generator=g)
        comps = self.components[idx].clone()  # (B, 3, S, S)
        k = self.n_components[idx].clone()
        # peeling depth: remove the d brightest (0 <= d < k), leaving a few % of each behind
        depth = torch.zeros(size, dtype=torch.long)
        peel = torch.rand(size, generator=g) < peel_probability
        max_depth = (k - 1).clamp(min=0)
        depth[peel] = (torch.rand(int(peel.sum()), generator=g) * (max_depth[peel] + 1).float()).long()
        depth = torch.minimum(depth, max_depth)
        if empty_fraction > 0:
            empty = torch.rand(size, generator=g) < empty_fraction
            depth[empty] = k[empty]
        rank = torch.arange(MAX_GALAXIES).view(1, -1)
        removed = rank < depth.view(-1, 1)
        leftover = 1.0 + 0.05 * torch.randn(size, MAX_GALAXIES, generator=g)
        weight = torch.where(removed, leftover - 1.0, torch.ones_like(leftover))
        clean = (comps * weight[..., None, None]).sum(dim=1, keepdim=True)
        if self.texture > 0:
            share = self.texture * torch.rand(size, MAX_GALAXIES, generator=g) * removed
            clean = clean + (self._fine_structure(comps) * share[..., None, None]).sum(dim=1, keepdim=True)
        # targets: the brightest remaining galaxy and the next one
        order = (rank + depth.view(-1, 1)).clamp(max=MAX_GALAXIES - 1)
        gathered = torch.gather(comps, 1, order[..., None, None].expand(-1, -1, *comps.shape[-2:]))
        target = gathered[:, :1] * (depth < k).view(-1, 1, 1, 1)
        second = gathered[:, 1:2] * (depth + 1 < k).view(-1, 1, 1, 1)
        count = (k - depth).clamp(min=0)
        f0, f1 = target.sum(dim=(1, 2, 3)), second.sum(dim=(1, 2, 3))
        ratio = torch.where(f0 > 0, f1 / f0.clamp(min=1e-9), torch.zeros_like(f0))
        # noise: background + Poisson on the source, Gaussian approximation
        variance = self.sigma**2 + clean.clamp(min=0)
        x = clean + torch.randn(clean.shape, generator=g) * variance.sqrt()
        # random flips / transposition (the 8 symmetries of the square)
        stacked = torch.cat([x, target, second], dim=1)
        if torch.rand(1, generator=g) < 0.5:
            stacked = stacked.flip(-1)
        if torch.rand(1, generator=g) < 0.5:
            stacked = stacked.flip(-2)
        if torch.rand(1, generator=g) < 0.5:
            stacked = stacked.transpose(-1, -2)
        x, target, second = stacked[:, :1], stacked[:, 1:2], stacked[:, 2:3]
        return {
            "x": x.contiguous(),
            "target": target.contiguous(),
            "second": second.contiguous(),
            "count": count.clamp(max=MAX_GALAXIES),
            "ratio": ratio,
            "sigma": torch.full((size,), self.sigma),
        }


# ---- losses ---------------------------------------------------------------------------------------


IMAGE_LOSSES = ("l1", "noise-rms")
NOISE_RMS_WEIGHT = 0.025  # brings the noise-rms term to the size of the L1 one (~0.005 at the shipped weights)


def image_loss(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor, sigma: torch.Tensor,
               flux_weight: float = 0.0, kind: str = "l1") -> torch.Tensor:
    """Per-sample loss of the RDN's image against the noiseless target.

    ``kind="l1"``: L1 in units of the stamp scale plus L1 of asinh(./sigma) (faint
    wings). ``kind="noise-rms"``: the root mean square of the residual in units of
    each pixel's noise (sky + source Poisson variance of the target), so that every
    pixel counts as much as it does in a noise-weighted fit; squared within an
    image, it does not let a few bright core pixels dominate the wings.
    With ``flux_weight``, plus that weight times the relative flux error
    ``|Σ pred − Σ target| / Σ target`` (the quantity the evaluation's Δf/f measures).
    """
    s = sigma.view(-1, 1, 1, 1)
    if kind == "noise-rms":
        variance = s**2 + target.clamp(min=0)
        chi2 = ((pred * scale - target) ** 2 / variance).mean(dim=(1, 2, 3))
        loss = NOISE_RMS_WEIGHT * torch.sqrt(chi2 + 1e-6)
    else:
        linear = (pred - target / scale).abs().mean(dim=(1, 2, 3))
        soft = (torch.asinh(pred * scale / s) - torch.asinh(target / s)).abs().mean(dim=(1, 2, 3))
        loss = linear + 0.02 * soft
    if flux_weight:
        true_flux = (target / scale).sum(dim=(1, 2, 3))
        flux_error = (pred.sum(dim=(1, 2, 3)) - true_flux).abs() / true_flux.clamp_min(1e-6)
        loss = loss + flux_weight * flux_error
    return loss


def rdn_loss(pred, batch, scale, symmetric: bool, flux_weight: float = 0.0, kind: str = "l1") -> torch.Tensor:
    """RDN loss against the brightest galaxy; symmetric in the two brightest when their fluxes are close."""
    loss_first = image_loss(pred, batch["target"], scale, batch["sigma"], flux_weight, kind)
    if not symmetric:
        return loss_first.mean()
    loss_second = image_loss(pred, batch["second"], scale, batch["sigma"], flux_weight, kind)
    ambiguous = batch["ratio"] >= AMBIGUOUS_RATIO
    return torch.where(ambiguous, torch.minimum(loss_first, loss_second), loss_first).mean()


# ---- training -------------------------------------------------------------------------------------


class EMA:
    """Exponential moving average of a model's weights (the shipped weights)."""

    def __init__(self, model: torch.nn.Module, decay: float = 0.998) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
            else:
                self.shadow[k].copy_(v)


def cosine_lr(base: float, progress: float, warmup: float = 0.03) -> float:
    """Learning rate: linear warm-up then cosine decay to 1% of ``base``."""
    if progress < warmup:
        return base * max(progress / warmup, 0.05)
    t = (progress - warmup) / (1 - warmup)
    return base * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(t, 1.0))))


@torch.no_grad()
def validate(rdn: RDN, counter: GalaxyCounter, val: dict[str, torch.Tensor], kind: str = "l1") -> dict[str, float]:
    """Validation metrics on a fixed batch: RDN loss (image loss ``kind``), brightest-galaxy Δf/f bias and
    scatter, counter accuracy."""
    rdn.eval()
    counter.eval()
    inp, scale = normalise(val["x"], val["sigma"])
    pred = rdn(inp)
    has = val["target"].sum(dim=(1, 2, 3)) > 0
    loss = float(rdn_loss(pred[has], {k: v[has] for k, v in val.items()}, scale[has], symmetric=True,
                           kind=kind))
    flux_pred = (pred * scale).sum(dim=(1, 2, 3))
    flux_true = val["target"].sum(dim=(1, 2, 3))
    flux_second = val["second"].sum(dim=(1, 2, 3))
    # symmetric: compare with whichever of the two candidates is closer when ambiguous
    err_first = (flux_pred - flux_true) / flux_true.clamp(min=1e-9)
    err_second = (flux_pred - flux_second) / flux_second.clamp(min=1e-9)
    ambiguous = val["ratio"] >= AMBIGUOUS_RATIO
    err = torch.where(ambiguous & (err_second.abs() < err_first.abs()), err_second, err_first)[has].numpy()
    p16, p50, p84 = np.percentile(err, [16, 50, 84])
    accuracy = float((counter(inp).argmax(dim=1) == val["count"]).float().mean())
    rdn.train()
    counter.train()
    return {"val_loss": loss, "flux_bias": float(p50), "flux_scatter": float((p84 - p16) / 2), "count_accuracy": accuracy}


def save_checkpoint(path: Path, rdn: RDN, counter: GalaxyCounter, state: dict[str, Any]) -> None:
    """Write weights (+ resumable state) atomically."""
    payload = {
        "rdn": {k: v.detach().cpu() for k, v in rdn.state_dict().items()},
        "counter": {k: v.detach().cpu() for k, v in counter.state_dict().items()},
        "rdn_config": rdn.config,
        "counter_config": counter.config,
        **state,
    }
    tmp = path.with_name(path.name + ".part")
    torch.save(payload, tmp)
    tmp.replace(path)


def start_run(config: Any, out_dir: str | Path) -> tuple[Path, torch.device, Any]:
    """Output folder, seeds, threads, device and ``config.json`` of a training run: ``(out, device, preset)``.

    ``config`` needs ``seed``, ``threads``, ``device`` and ``preset``.
    """
    from ..deblenders.base import resolve_device

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    torch.set_flush_denormal(True)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = torch.device(resolve_device(config.device))
    preset = get_preset(config.preset)
    (out / "config.json").write_text(json.dumps(asdict(config), indent=2))
    return out, device, preset


def prepare_run(config: Any, out_dir: str | Path, log: Callable[[str], None] = print) -> tuple:
    """Common start of a training run: output folder, seeds, threads, device, config.json, cached data.

    ``config`` needs ``seed``, ``threads``, ``device``, ``preset``, ``n_train``, ``n_val``,
    ``stamp_size`` and ``workers``; with ``real_galaxies`` (an export-training folder) a
    ``real_fraction`` of the training galaxies become real ones (the validation set stays
    parametric). Returns ``(out, device, preset, train_data, val_data)``.
    """
    out, device, preset = start_run(config, out_dir)
    cache = out / "cache"
    mix = data_mix(config)
    train_data = load_or_simulate(config.n_train, config.stamp_size, preset.name,
                                  TRAIN_SEED_BASE + config.seed, config.workers, cache, log, mix, "train")
    if getattr(config, "real_galaxies", None):
        from ..real_galaxies import load_real_galaxies, mix_real_galaxies

        real = load_real_galaxies(config.real_galaxies, preset=preset.name)
        train_data, n_real = mix_real_galaxies(train_data, real, config.real_fraction, seed=config.seed)
        total = int(train_data["n_components"].sum())
        log(f"real galaxies: {len(real)} from {config.real_galaxies}; {n_real} of {total} training galaxies "
            f"({n_real / max(total, 1):.0%}) replaced by them")
    val_data = load_or_simulate(config.n_val, config.stamp_size, preset.name, VALIDATION_SEED, config.workers, cache,
                                log, mix, "validation")
    return out, device, preset, train_data, val_data


def warm_start(rdn: RDN, counter: GalaxyCounter, path: Path, log: Callable[[str], None] = print) -> None:
    """Load ``--init`` weights into ``rdn`` and ``counter``.

    Weights without a detail refiner also start a network with one: the refiner
    keeps its fresh (zero-output) initialisation. Weights with fewer residual
    dense blocks start a deeper network (:func:`grow_blocks`). Either way training
    starts from exactly the given weights' output. Any other difference in size is an error.
    """
    from ..deblenders.peeling import load_checkpoint

    init = load_checkpoint(path)
    given, own = init["rdn_config"], rdn.config
    n_given, n_own = given.get("n_blocks", 6), own.get("n_blocks", 6)
    refiner_given, refiner_own = given.get("refine_width", 0), own.get("refine_width", 0)
    fits = (
        _without(given, "n_blocks", "refine_width") == _without(own, "n_blocks", "refine_width")
        and n_given <= n_own  # as deep, or grown deeper
        and refiner_given in (0, refiner_own)  # the same refiner, or a new one grafted on
        and init["counter_config"] == counter.config
    )
    if not fits:
        raise DeblendInputError(f"--init {path}: networks of another size ({given}); expected {own}")
    if n_given < n_own:
        grow_blocks(rdn, init["rdn"], n_given)
    else:
        rdn.load_state_dict(init["rdn"], strict=given == own)
    counter.load_state_dict(init["counter"])
    grafted = " (a new detail refiner grafted on)" if refiner_own and not refiner_given else ""
    grown = f" ({n_given} residual dense blocks grown to {n_own})" if n_given < n_own else ""
    log(f"warm start from {path}{grafted}{grown}")


def _without(config: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in config.items() if k not in keys}


def rdn_blocks(config: PeelingTrainConfig, out_dir: Path, resume: bool) -> int:
    """Residual dense blocks of the RDN to train: ``config.blocks``, else those of the weights it starts from, else 6."""
    if config.blocks:
        return int(config.blocks)
    checkpoint = out_dir / "checkpoint.pt"
    if resume and checkpoint.exists():
        return int(load_training_checkpoint(checkpoint, PEELING_RESUME_KEYS)["rdn_config"].get("n_blocks", 6))
    if config.init:
        from ..deblenders.peeling import load_checkpoint

        return int(load_checkpoint(Path(config.init))["rdn_config"].get("n_blocks", 6))
    return 6


def grow_blocks(rdn: RDN, state: dict[str, torch.Tensor], n_init: int) -> None:
    """Load the weights of an RDN with ``n_init`` residual dense blocks into the deeper ``rdn``.

    The first ``n_init`` blocks take the given weights. Each added block starts
    as the identity (its local fusion is zero, so its residual passes its input
    through), and the global fusion gives the added blocks' outputs zero weight:
    the deeper network computes exactly what the given one did, and training
    goes on from there with the added capacity.

    Parameters
    ----------
    rdn : RDN
        The deeper network (modified in place).
    state : dict
        State dict of the shallower RDN (same sizes but ``n_blocks``).
    n_init : int
        Its number of residual dense blocks.
    """
    own = rdn.state_dict()
    fuse_in = "global_fuse.0.weight"
    for key, value in state.items():
        if key == fuse_in:
            weight = torch.zeros_like(own[key])
            weight[:, : value.shape[1]] = value
            own[key] = weight
        elif key in own:
            own[key] = value.clone()
    for index in range(n_init, len(rdn.blocks)):
        own[f"blocks.{index}.fuse.weight"] = torch.zeros_like(own[f"blocks.{index}.fuse.weight"])
        own[f"blocks.{index}.fuse.bias"] = torch.zeros_like(own[f"blocks.{index}.fuse.bias"])
    rdn.load_state_dict(own)


def train_peeling(config: PeelingTrainConfig, out_dir: str | Path, resume: bool = False,
                  log: Callable[[str], None] = print, progress: Callable[[float], None] | None = None) -> Path:
    """Train the peeling deblender for ``config.minutes`` of wall time; returns the weights path.

    Writes into ``out_dir``: ``checkpoint.pt`` (resumable, every ``checkpoint_minutes``),
    ``peeling.pt`` (the EMA weights to ship), ``history.jsonl`` (validation curve)
    and ``config.json``.
    """
    config.blocks = rdn_blocks(config, Path(out_dir), resume)  # resolved, so that config.json records it
    out, device, preset, train_data, val_data = prepare_run(config, out_dir, log)
    maker = BatchMaker(train_data, preset.background_sigma, seed=config.seed, texture=config.texture_leftover)
    val = BatchMaker(val_data, preset.background_sigma, seed=VALIDATION_SEED).batch(config.n_val, peel_probability=0.3,
                                                                                  empty_fraction=0.1)

    rdn = RDN(n_blocks=config.blocks, refine_width=config.refine_width).to(device)
    counter = GalaxyCounter().to(device)
    opt_rdn = torch.optim.AdamW(rdn.parameters(), lr=config.lr, weight_decay=1e-5)
    opt_counter = torch.optim.AdamW(counter.parameters(), lr=config.lr / 2, weight_decay=1e-4)
    if config.init and not resume:
        warm_start(rdn, counter, Path(config.init), log)
    ema_rdn = EMA(rdn)
    elapsed_before, step = 0.0, 0
    checkpoint_path = out / "checkpoint.pt"
    if resume and checkpoint_path.exists():
        state = load_training_checkpoint(checkpoint_path, PEELING_RESUME_KEYS)
        rdn.load_state_dict(state["rdn_live"])
        counter.load_state_dict(state["counter"])
        opt_rdn.load_state_dict(state["opt_rdn"])
        opt_counter.load_state_dict(state["opt_counter"])
        ema_rdn.shadow = state["rdn"]
        elapsed_before, step = state["elapsed"], state["step"]
        log(f"resumed at step {step}, {elapsed_before / 60:.1f} min")

    budget = config.minutes * 60.0
    bounds = np.cumsum(config.phase_fractions) / np.sum(config.phase_fractions) * budget
    start = time.perf_counter() - elapsed_before
    last_checkpoint = last_val = time.perf_counter()
    history = open(out / "history.jsonl", "a")

    def elapsed() -> float:
        return time.perf_counter() - start

    def snapshot(final: bool = False) -> None:
        live = {k: v.detach().cpu().clone() for k, v in rdn.state_dict().items()}
        ema_model = RDN(**rdn.config)
        ema_model.load_state_dict(ema_rdn.shadow)
        state = {"rdn_live": live, "opt_rdn": opt_rdn.state_dict(), "opt_counter": opt_counter.state_dict(),
                 "elapsed": elapsed(), "step": step, "stamp_size": config.stamp_size, "preset": preset.name,
                 "version": "1"}
        save_checkpoint(checkpoint_path, ema_model, counter, state)
        if final:
            save_checkpoint(out / "peeling.pt", ema_model, counter,
                            {"stamp_size": config.stamp_size, "preset": preset.name, "version": "1"})

    rdn.train()
    counter.train()
    while (now := elapsed()) < budget:
        phase = int(np.searchsorted(bounds, now, side="right"))
        phase_start = 0.0 if phase == 0 else bounds[phase - 1]
        in_phase = (now - phase_start) / max(bounds[phase] - phase_start, 1e-9)
        # each phase has its own warm-up + cosine decay; the joint phase fine-tunes gently
        rdn_lr = {0: config.lr, 1: 0.0, 2: 0.05 * config.lr}[phase] * cosine_lr(1.0, in_phase)
        counter_lr = {0: 0.0, 1: config.lr / 2, 2: 0.1 * config.lr / 2}[phase] * cosine_lr(1.0, in_phase)
        for group in opt_rdn.param_groups:
            group["lr"] = rdn_lr
        for group in opt_counter.param_groups:
            group["lr"] = counter_lr
        batch = maker.batch(config.batch_size, peel_probability=0.4, empty_fraction=0.1 if phase else 0.0)
        batch = {k: v.to(device) for k, v in batch.items()}
        inp, scale = normalise(batch["x"], batch["sigma"])
        if phase == 0:
            has = batch["count"] > 0
            loss = rdn_loss(rdn(inp[has]), {k: v[has] for k, v in batch.items()}, scale[has], config.symmetric,
                            config.flux_weight, config.image_loss)
            opt_rdn.zero_grad()
            loss.backward()
            opt_rdn.step()
            ema_rdn.update(rdn)
        elif phase == 1:
            loss = F.cross_entropy(counter(inp), batch["count"])
            opt_counter.zero_grad()
            loss.backward()
            opt_counter.step()
        else:
            has = batch["count"] > 0
            pred = rdn(inp[has])
            loss_rdn = rdn_loss(pred, {k: v[has] for k, v in batch.items()}, scale[has], config.symmetric,
                                config.flux_weight, config.image_loss)
            residual = batch["x"][has] - pred * scale[has]
            res_inp, _ = normalise(residual, batch["sigma"][has])
            loss_count = F.cross_entropy(counter(res_inp), batch["count"][has] - 1)
            loss_direct = F.cross_entropy(counter(inp), batch["count"])
            loss = loss_rdn + config.joint_lambda * loss_count + loss_direct
            if config.counter_residual_weight:
                held, _ = normalise(batch["x"][has] - pred.detach() * scale[has], batch["sigma"][has])
                loss = loss + config.counter_residual_weight * F.cross_entropy(counter(held), batch["count"][has] - 1)
            opt_rdn.zero_grad()
            opt_counter.zero_grad()
            loss.backward()
            opt_rdn.step()
            opt_counter.step()
            ema_rdn.update(rdn)
        step += 1
        if progress is not None:
            progress(min(elapsed() / budget, 1.0))
        if time.perf_counter() - last_val > 120:
            ema_model = RDN(**rdn.config)
            ema_model.load_state_dict(ema_rdn.shadow)
            metrics = {"step": step, "minutes": round(elapsed() / 60, 2), "phase": phase, "loss": loss.item(),
                       **validate(ema_model, counter, val, config.image_loss)}
            history.write(json.dumps(metrics) + "\n")
            history.flush()
            log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()))
            last_val = time.perf_counter()
        if time.perf_counter() - last_checkpoint > config.checkpoint_minutes * 60:
            snapshot()
            last_checkpoint = time.perf_counter()
    snapshot(final=True)
    history.close()
    log(f"done: {step} steps in {elapsed() / 60:.1f} min -> {out / 'peeling.pt'}")
    return out / "peeling.pt"
