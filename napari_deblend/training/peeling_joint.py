"""Training of the peeling deblender's joint refiner (``napari-deblend train peeling-joint``).

The first peeling pass hands light between overlapping galaxies: on 1000
validation pairs the errors of the brighter and the fainter galaxy's flux are
anti-correlated (−0.6 in electrons), and given the *true* neighbour the same RDN
would measure the fainter galaxy with 7.5 % scatter instead of 14 %. The
joint refiner re-extracts each component knowing what the first pass made of
all of them: its input is the blend minus the other components (what the RDN
alone saw in the refinement sweep), the other components, and the component's
own first-pass estimate, each in the linear + asinh channels of
:func:`~napari_deblend.deblenders.nets.normalise` (6 channels). It is an RDN
of the peeling network's size whose first convolution takes the 4 added
channels with zero weights, so training starts from exactly the old sweep's
output.

Data: noisy parametric blends of 2 and 3 galaxies, run once through the shipped
first pass (peeling without refinement or refit); every predicted component
matched one-to-one to a true galaxy is a sample whose target is that galaxy's
noiseless image. The samples are cached in ``OUT/cache``; every batch gets a
random flip/transposition (the same for all its images).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..deblenders.nets import RDN, joint_input
from ..errors import DeblendInputError
from .config import TrainConfig
from .data_mix import DataMix, data_mix
from .loop import Phase, run_phase, save_weights
from .peeling import cached_npz, image_loss, start_run

JOINT_TRAIN_SEED = 3_000_000  # simulation seeds of the joint refiner's data; never the evaluation's
JOINT_VALIDATION_SEED = 3_999_999
TRIPLE_FRACTION = 0.4  # share of 3-galaxy stamps in the data (the rest are pairs)
PHASE = "joint"  # the training loop's phase name (history lines, joint_checkpoint.pt)


@dataclass
class JointTrainConfig(TrainConfig):
    """Options of ``napari-deblend train peeling-joint`` (``init``: the peeling weights whose first pass it refines)."""

    minutes: float = 60.0
    n_train: int = 40_000
    n_val: int = 1_000
    lr: float = 2e-4
    flux_weight: float = 0.05
    image_loss: str = "noise-rms"
    # joint sweeps whose outputs are also samples (0: the first pass only); > 0 needs --init weights with a
    # joint refiner, which then also starts the training (the later sweeps' inputs come from it)
    data_sweeps: int = 0
    # go on from the --init weights' joint refiner (a fine-tune, e.g. with another --flux-weight) instead of
    # starting from their RDN sweep; implied by data_sweeps > 0
    continue_joint: bool = False
    # start from the joint refiner of these peeling weights (e.g. the refiner of earlier weights, fine-tuned on the
    # first pass of retrained --init networks); None: the --init weights' own (with continue_joint) or their RDN sweep
    joint_init: str | None = None


def joint_rdn_from(rdn: RDN) -> RDN:
    """A joint refiner that computes exactly what ``rdn`` does on its first two input channels.

    The new network has ``rdn``'s size with 6 input channels; it takes all of
    ``rdn``'s weights, and zero weights for the 4 added channels.
    """
    config = dict(rdn.config, in_channels=3 * rdn.config["in_channels"])
    joint = RDN(**config)
    state = {k: v.clone() for k, v in rdn.state_dict().items()}
    head = state["head.0.weight"]
    grown = torch.zeros(head.shape[0], config["in_channels"], *head.shape[2:], dtype=head.dtype)
    grown[:, : head.shape[1]] = head
    state["head.0.weight"] = grown
    joint.load_state_dict(state)
    return joint


def first_pass_samples(deblender: Any, images: np.ndarray, components: np.ndarray, n_components: np.ndarray,
                       positions: np.ndarray, sigma: float, log: Callable[[str], None] = print,
                       sweeps: int = 0) -> dict[str, np.ndarray]:
    """Samples of the joint refiner: the deblender's first pass on ``images``, matched to the truth.

    Parameters
    ----------
    deblender : PeelingDeblender
        Run with no refinement sweep, no refit and in float32 (restored afterwards).
    images : numpy.ndarray
        ``(N, 1, S, S)`` noisy blends.
    components : numpy.ndarray
        ``(N, K, 1, S, S)`` their noiseless galaxies.
    n_components : numpy.ndarray
        ``(N,)`` galaxies per blend.
    positions : numpy.ndarray
        ``(N, K, 2)`` true positions ``(y, x)``.
    sigma : float
        Background noise sigma.
    sweeps : int
        Joint-refiner sweeps (the deblender's) applied after the first pass,
        each of whose outputs also gives samples (as inputs of the next sweep).

    Returns
    -------
    dict
        ``stamp`` (M,) index into ``images``; ``own``, ``others``, ``target``
        ``(M, 1, S, S)``; ``rank`` (M,) the component's order in the first pass.
    """
    from ..measurements import match_positions

    saved = deblender.refine_sweeps, deblender.refit_brightest, deblender.joint, deblender.precision
    joint = deblender.joint
    if sweeps and joint is None:
        raise DeblendInputError(f"data sweeps {sweeps}: the weights {deblender.weights} have no joint refiner to "
                                "make them; give --init weights with one")
    # float32 whatever the CPU: the same samples (and cache) on every machine
    deblender.refine_sweeps, deblender.refit_brightest, deblender.joint, deblender.precision = 0, False, None, "float32"
    stamp, own, others, target, rank = [], [], [], [], []
    start = time.perf_counter()
    try:
        for lo in range(0, len(images), 256):
            results = deblender.deblend_batch(images[lo:lo + 256], noise=sigma)
            passes = [[list(r.components) for r in results]]
            if sweeps:
                deblender.joint = joint
                sigmas = torch.full((len(results),), float(sigma))
                for _ in range(sweeps):
                    comps = [[c.copy() for c in stamp_comps] for stamp_comps in passes[-1]]
                    with torch.inference_mode():
                        deblender._refine(images[lo:lo + len(results)], sigmas, comps)
                    passes.append(comps)
                deblender.joint = None
            for offset, result in enumerate(results):
                i = lo + offset
                if len(result.components) < 2:
                    continue
                k = int(n_components[i])
                matches = match_positions(result.positions, positions[i, :k])
                for stage in passes:
                    comps = np.stack(stage[offset])
                    total = comps.sum(axis=0)
                    for p, j in matches:
                        stamp.append(i)
                        own.append(comps[p])
                        others.append(total - comps[p])
                        target.append(components[i, j])
                        rank.append(p)
            if lo % 5120 == 0:
                log(f"first pass: {lo + len(results)} / {len(images)} stamps, {time.perf_counter() - start:.0f} s")
    finally:
        deblender.refine_sweeps, deblender.refit_brightest, deblender.joint, deblender.precision = saved
    return {
        "stamp": np.asarray(stamp, np.int64),
        "own": np.asarray(own, np.float32),
        "others": np.asarray(others, np.float32),
        "target": np.asarray(target, np.float32),
        "rank": np.asarray(rank, np.int64),
    }


def _networks_hash(nets: list[torch.nn.Module]) -> str:
    """A short hash of the networks' weights: the samples depend on these only (not on the rest of the file)."""
    digest = hashlib.sha256()
    for net in nets:
        for name, tensor in sorted(net.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:12]


def joint_data(deblender: Any, n: int, stamp_size: int, preset: str, seed: int, workers: int,
               cache_dir: Path | None, log: Callable[[str], None] = print, sweeps: int = 0,
               mix: DataMix | None = None, split: str = "train") -> dict[str, np.ndarray]:
    """Simulate ``n`` blends (2 and 3 galaxies), run the first pass, return (and cache) the samples and images.

    ``mix`` is the morphology mix and real-galaxy pool (default parametric), ``split`` the pool's split.
    """
    from .evaluate import _simulator_fingerprint

    weights_tag = _networks_hash([deblender.rdn, deblender.counter] + ([deblender.joint] if sweeps else []))
    tag = f"_sweeps{sweeps}" if sweeps else ""
    mix = mix or DataMix("parametric")
    if mix.tag() != "parametric":
        tag += f"_{mix.tag()}_{split}"
    name = f"joint_{preset}_{stamp_size}_{n}_{seed}_{_simulator_fingerprint()}_{weights_tag}{tag}.npz"
    return cached_npz(cache_dir, name, lambda: _simulate_samples(deblender, n, stamp_size, preset, seed, workers,
                                                                 log, sweeps, mix, split))


def _simulate_samples(deblender: Any, n: int, stamp_size: int, preset: str, seed: int, workers: int,
                      log: Callable[[str], None], sweeps: int, mix: DataMix, split: str) -> dict[str, np.ndarray]:
    """Simulate the blends of :func:`joint_data` and make their samples (uncached)."""
    from ..simulate import simulate_blends
    from .evaluate import _positions_from_truth

    start = time.perf_counter()
    n_triples = int(round(n * TRIPLE_FRACTION))
    parts = []
    for k, count in ((2, n - n_triples), (3, n_triples)):
        if count:
            blends = simulate_blends(count, n_galaxies=k, stamp_size=stamp_size, preset=preset, seed=seed * 10 + k,
                                     n_workers=workers, **mix.simulate_kwargs(split))
            comps = np.zeros((count, 3, 1, stamp_size, stamp_size), np.float32)
            comps[:, :k] = blends.components[:, :k]
            parts.append((blends.images.astype(np.float32), comps, np.full(count, k),
                          _positions_from_truth(blends.truth, count, 3), float(np.mean(blends.noise_sigma))))
    images = np.concatenate([p[0] for p in parts])
    components = np.concatenate([p[1] for p in parts])
    n_components = np.concatenate([p[2] for p in parts])
    positions = np.concatenate([p[3] for p in parts])
    sigma = parts[0][4]
    log(f"simulated {n} blends in {time.perf_counter() - start:.0f} s")
    data = first_pass_samples(deblender, images, components, n_components, positions, sigma, log, sweeps)
    data.update(images=images, sigma=np.float32(sigma), n_components=n_components)
    log(f"{len(data['stamp'])} samples from {n} blends in {time.perf_counter() - start:.0f} s")
    return data


class JointBatches:
    """Batches of joint-refiner samples with a random flip/transposition each."""

    def __init__(self, data: dict[str, np.ndarray], seed: int) -> None:
        self.images = torch.from_numpy(data["images"])
        self.stamp = torch.from_numpy(data["stamp"])
        self.own = torch.from_numpy(data["own"])
        self.others = torch.from_numpy(data["others"])
        self.target = torch.from_numpy(data["target"])
        self.rank = torch.from_numpy(data["rank"])
        self.sigma = float(data["sigma"])
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.stamp)

    def take(self, idx: torch.Tensor, augment: bool = True) -> dict[str, torch.Tensor]:
        """Samples ``idx``: ``residual`` (blend minus the others), ``others``, ``own``, ``target``, ``sigma``, ``rank``."""
        others = self.others[idx]
        stacked = torch.cat([self.images[self.stamp[idx]] - others, others, self.own[idx], self.target[idx]], dim=1)
        if augment:
            g = self.generator
            if torch.rand(1, generator=g) < 0.5:
                stacked = stacked.flip(-1)
            if torch.rand(1, generator=g) < 0.5:
                stacked = stacked.flip(-2)
            if torch.rand(1, generator=g) < 0.5:
                stacked = stacked.transpose(-1, -2)
        residual, others, own, target = (stacked[:, i:i + 1].contiguous() for i in range(4))
        return {"residual": residual, "others": others, "own": own, "target": target,
                "sigma": torch.full((len(idx),), self.sigma), "rank": self.rank[idx]}

    def batch(self, size: int) -> dict[str, torch.Tensor]:
        """A random batch of ``size`` samples."""
        return self.take(torch.randint(len(self), (size,), generator=self.generator))


def _flux_errors(net: RDN, batches: JointBatches, first_stage: bool) -> tuple[np.ndarray, np.ndarray]:
    """Δf/f of every validation sample and its rank; ``first_stage``: the input's own estimate instead of the net."""
    errors, ranks = [], []
    device = next(net.parameters()).device
    with torch.inference_mode():
        for lo in range(0, len(batches), 256):
            b = {k: v.to(device) for k, v in batches.take(torch.arange(lo, min(lo + 256, len(batches))),
                                                             augment=False).items()}
            if first_stage:
                flux = b["own"].sum(dim=(1, 2, 3))
            else:
                inp, scale = joint_input(b["residual"], b["others"], b["own"], b["sigma"])
                flux = (net(inp) * scale).sum(dim=(1, 2, 3))
            true = b["target"].sum(dim=(1, 2, 3))
            errors.append(((flux - true) / true.clamp(min=1e-9)).cpu().numpy())
            ranks.append(b["rank"].cpu().numpy())
    return np.concatenate(errors), np.concatenate(ranks)


def validate_joint(net: RDN, batches: JointBatches, first_stage: bool = False) -> dict[str, float]:
    """Flux Δf/f 68 % scatter of the first-ranked and the other components of the validation samples."""
    from .evaluate import flux_stats

    was_training = net.training
    net.eval()
    errors, ranks = _flux_errors(net, batches, first_stage)
    net.train(was_training)
    first, rest = flux_stats(errors[ranks == 0]), flux_stats(errors[ranks > 0])
    return {"scatter_first": first["scatter"], "bias_first": first["bias"],
            "scatter_rest": rest["scatter"], "bias_rest": rest["bias"]}


def train_joint(config: JointTrainConfig, out_dir: str | Path, resume: bool = False,
                log: Callable[[str], None] = print, progress: Callable[[float], None] | None = None) -> Path:
    """Train the joint refiner for ``config.minutes``; write ``OUT/peeling.pt`` (the peeling weights with it).

    ``config.init`` names the peeling weights (default: the shipped ones); their
    RDN and counter make the first pass and are copied unchanged into the output.
    The loop (cosine schedule, weight average, ``history.jsonl``, a resumable
    ``joint_checkpoint.pt``) is :func:`~napari_deblend.training.loop.run_phase`.
    """
    from ..deblenders.peeling import WEIGHTS_DIR, PeelingDeblender, load_checkpoint

    init = Path(config.init) if config.init else WEIGHTS_DIR / "peeling.pt"
    config.init = str(init)
    out, device, preset = start_run(config, out_dir)
    base = load_checkpoint(init)
    if config.continue_joint and "joint" not in base:
        raise DeblendInputError(f"--continue-joint: the --init weights {init} have no joint refiner to go on from; "
                                f"train one first with `napari-deblend train peeling-joint --init {init}`")
    deblender = PeelingDeblender(device="cpu", preset=preset.name, weights=init)
    cache = out / "cache"
    train_data = joint_data(deblender, config.n_train, config.stamp_size, preset.name,
                            JOINT_TRAIN_SEED + config.seed, config.workers, cache, log, config.data_sweeps,
                            data_mix(config), "train")
    val_data = joint_data(deblender, config.n_val, config.stamp_size, preset.name,
                          JOINT_VALIDATION_SEED, config.workers, cache, log, config.data_sweeps,
                          data_mix(config), "validation")
    if not len(train_data["stamp"]):
        raise DeblendInputError(f"--n-train={config.n_train}: the first pass split none of these blends; "
                                "simulate more stamps")
    batches = JointBatches(train_data, config.seed)
    val = JointBatches(val_data, JOINT_VALIDATION_SEED)

    if config.joint_init:  # a refiner of other weights, fine-tuned on this first pass
        source = load_checkpoint(Path(config.joint_init))
        if "joint" not in source:
            raise DeblendInputError(f"--joint-init {config.joint_init}: these peeling weights have no joint refiner")
        net = RDN(**source["joint_config"])
        net.load_state_dict(source["joint"])
        log(f"starting from the joint refiner of {config.joint_init}")
    elif config.data_sweeps or config.continue_joint:  # go on from the given joint refiner
        net = RDN(**base["joint_config"])
        net.load_state_dict(base["joint"])
        log(f"starting from the joint refiner of {init}")
    else:
        net = joint_rdn_from(deblender.rdn.cpu())
    del deblender
    net = net.to(device)
    if not (resume and (out / f"{PHASE}_checkpoint.pt").exists()):
        start_metrics = {"step": 0, "minutes": 0.0, "first_pass": validate_joint(net, val, first_stage=True),
                         **validate_joint(net, val)}
        with open(out / "history.jsonl", "a") as history:
            history.write(json.dumps(start_metrics) + "\n")
        log(f"start: {start_metrics}")

    def step() -> torch.Tensor:
        b = {k: v.to(device) for k, v in batches.batch(config.batch_size).items()}
        inp, scale = joint_input(b["residual"], b["others"], b["own"], b["sigma"])
        return image_loss(net(inp), b["target"], scale, b["sigma"], config.flux_weight, config.image_loss).mean()

    phase = Phase(PHASE, net, torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-5), step,
                  lambda model: validate_joint(model, val), config.lr, config.minutes * 60.0)
    averaged = run_phase(phase, out, log, progress, checkpoint_minutes=config.checkpoint_minutes, resume=resume)
    joint = {k: v.detach().cpu() for k, v in averaged.state_dict().items()}
    return save_weights(out / "peeling.pt", {**base, "joint": joint, "joint_config": net.config})
