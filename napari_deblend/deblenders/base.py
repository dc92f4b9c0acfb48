"""The deblender protocol, the result type, devices, and the registry of deblenders.

A deblender takes a batch of stamps ``(N, C, H, W)`` (sky-subtracted,
electrons) with optional source positions and noise level and returns one
:class:`DeblendResult` per stamp.  Built-ins register by name; other packages
add theirs through the entry-point group ``napari_deblend.deblenders``, whose
entries point at a :class:`Deblender` subclass (or a factory returning one).
"""

from __future__ import annotations

import functools
import importlib
import json
import warnings
from dataclasses import dataclass
from dataclasses import field as dc_field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import DeblendInputError

ENTRY_POINT_GROUP = "napari_deblend.deblenders"

#: Built-in deblenders: name -> "module:Class".
BUILTIN_DEBLENDERS: dict[str, str] = {
    "peeling": "napari_deblend.deblenders.peeling:PeelingDeblender",
    "sextractor": "napari_deblend.deblenders.sextractor:SExtractorDeblender",
    "unet": "napari_deblend.deblenders.unet:UNetDeblender",
    "vae": "napari_deblend.deblenders.vae:VAEDeblender",
}


class DeblendError(DeblendInputError):
    """A deblender cannot run on the given input (stamp shape, bands, model name, weights, device)."""


@dataclass
class DeblendResult:
    """What a deblender made of one stamp.

    Attributes
    ----------
    blend : numpy.ndarray
        ``(C, H, W)`` the input stamp.
    components : numpy.ndarray
        ``(K, C, H, W)`` noiseless components in the input's units (fluxes add up).
    residual : numpy.ndarray
        ``(C, H, W)`` ``blend - components.sum(0)``.
    masks : numpy.ndarray
        ``(K, H, W)`` bool: where each component dominates (above the noise).
    positions : numpy.ndarray
        ``(K, 2)`` component positions ``(y, x)``, 0-based stamp pixels.
    quality : str
        Deblender-specific verdict (``High``/``Medium``/``Low`` for peeling; ``""`` if none).
    model : str
        Deblender name (and version).
    device : str
        Device it ran on.
    origin : tuple of int
        ``(y0, x0)`` of the stamp in its field (``(0, 0)`` for a bare stamp).
    blend_id : int
        Blend it was made for (0 for a bare stamp).
    noise : float
        Background sigma used (electrons per pixel).
    info : dict
        Anything else the deblender reports (counts per step, uncertainties, ...).
    """

    blend: np.ndarray
    components: np.ndarray
    positions: np.ndarray
    masks: np.ndarray | None = None
    residual: np.ndarray | None = None
    quality: str = ""
    model: str = ""
    device: str = "cpu"
    origin: tuple[int, int] = (0, 0)
    blend_id: int = 0
    noise: float = float("nan")
    info: dict[str, Any] = dc_field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blend = np.asarray(self.blend, dtype=np.float32)
        c, h, w = self.blend.shape
        self.components = np.asarray(self.components, dtype=np.float32).reshape(-1, c, h, w)
        self.positions = np.asarray(self.positions, dtype=float).reshape(-1, 2)
        if self.residual is None:
            self.residual = self.blend - self.components.sum(axis=0)
        if self.masks is None:
            self.masks = masks_from_components(self.components, self.noise)

    @property
    def n_components(self) -> int:
        """Number of components K."""
        return len(self.components)

    @property
    def fluxes(self) -> np.ndarray:
        """``(K, C)`` sum of each component's pixels."""
        return self.components.sum(axis=(2, 3))


def masks_from_components(components: np.ndarray, noise: float = float("nan")) -> np.ndarray:
    """Per-component masks: pixels where a component is the largest and above 1 sigma of the noise.

    Without a finite noise the threshold is 1% of each component's peak.
    """
    k = len(components)
    if k == 0:
        return np.zeros((0, *components.shape[-2:]), dtype=bool)
    summed = components.sum(axis=1)  # over bands
    winner = np.argmax(summed, axis=0)
    if np.isfinite(noise) and noise > 0:
        floor = np.full(k, float(noise))
    else:
        floor = 0.01 * summed.reshape(k, -1).max(axis=1)
    return np.stack([(winner == i) & (summed[i] > floor[i]) for i in range(k)])


class Deblender:
    """Base class of deblenders. Subclasses set the class attributes and implement :meth:`deblend_batch`.

    Class attributes
    ----------------
    name : str
        Registry name.
    description : str
        One line shown in lists and the UI.
    bands : int or None
        Number of bands accepted (``None``: any).
    stamp_size : int or None
        Stamp side the model needs (``None``: any size, e.g. fully convolutional or classical).
    min_stamp_size : int
        Smallest stamp side accepted.
    needs_positions : bool
        Whether positions must be given (no built-in needs them: they detect on the stamp).
    uses_positions : bool
        Whether positions, when given (e.g. clicked by a user), are used as the sources
        (``vae``, ``unet``); ``peeling`` and ``sextractor`` find their own.
    detection_hints : bool
        Whether catalogue positions, when given, inform the result without being taken
        as the sources (``peeling``: a component on a detection is never given back
        to its host by the split verifier); the pipeline and the viewer then pass
        the stamp's detections.
    takes_variance : bool
        Whether :meth:`deblend_batch` accepts ``variance=``: ``(N, C, H, W)``
        per-pixel variance of the stamps (``inf`` at masked pixels), given
        when the field has a noise plane (``sextractor``).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    bands: ClassVar[int | None] = None
    stamp_size: ClassVar[int | None] = None
    min_stamp_size: ClassVar[int] = 8
    needs_positions: ClassVar[bool] = False
    uses_positions: ClassVar[bool] = False
    detection_hints: ClassVar[bool] = False
    takes_variance: ClassVar[bool] = False
    version: ClassVar[str] = "1"

    def __init__(self, device: str = "auto", preset: Any = None) -> None:
        from ..presets import get_preset

        self.device = resolve_device(device)
        self.preset = get_preset(preset)

    def model_card(self) -> dict[str, Any]:
        """The model card (training data, command, metrics): the JSON beside ``self.weights``.

        Empty for classical methods (no ``weights`` attribute) or when no card was shipped.
        """
        weights = getattr(self, "weights", None)
        if weights is None:
            return {}
        card = Path(weights).with_suffix(".json")
        return json.loads(card.read_text()) if card.exists() else {}

    def deblend_batch(
        self,
        stamps: np.ndarray,
        positions: list[np.ndarray | None] | None = None,
        noise: float | np.ndarray | None = None,
    ) -> list[DeblendResult]:
        """Deblend ``(N, C, H, W)`` stamps; ``positions[i]`` is ``(K, 2)`` ``(y, x)`` or None."""
        raise NotImplementedError

    def run_in_chunks(self, n: int, run: Any) -> list[DeblendResult]:
        """Call ``run(chunk, size)`` over ``n`` stamps in chunks of ``batch_size``, concatenating results.

        A CUDA out-of-memory error halves the chunk size and retries the same chunk.
        """
        results: list[DeblendResult] = []
        size = int(getattr(self, "batch_size", 64))
        start = 0
        while start < n:
            try:
                results.extend(run(slice(start, start + size), size))
            except RuntimeError as exc:
                if "out of memory" not in str(exc).lower() or size == 1:
                    raise
                import torch

                torch.cuda.empty_cache()
                size = max(1, size // 2)
                continue
            start += size
        return results

    def check_stamps(self, stamps: np.ndarray) -> np.ndarray:
        """Validate a batch: 4-D float, band count, size, finite values; returns float32 C-contiguous."""
        stamps = np.asarray(stamps)
        if stamps.ndim != 4:
            raise DeblendError(f"{self.name}: stamps have shape {stamps.shape}: expected (N, C, H, W)")
        n, c, h, w = stamps.shape
        if self.bands is not None and c != self.bands:
            raise DeblendError(
                f"{self.name}: stamps have {c} band(s): this model takes {self.bands} band(s)"
            )
        if min(h, w) < self.min_stamp_size:
            raise DeblendError(
                f"{self.name}: stamp of {h}x{w} pixels is too small: expected at least "
                f"{self.min_stamp_size}x{self.min_stamp_size}"
            )
        if not np.isfinite(stamps).all():
            bad = int((~np.isfinite(stamps)).sum())
            raise DeblendError(
                f"{self.name}: {bad} NaN/inf pixel(s) in the stamp(s): expected finite values "
                "(mask or fill them first; napari_deblend.deblend() does this for fields)"
            )
        return np.ascontiguousarray(stamps, dtype=np.float32)

    def noise_levels(self, stamps: np.ndarray, noise: float | np.ndarray | None) -> np.ndarray:
        """Per-stamp background sigma: given, or the preset's (electrons)."""
        n = len(stamps)
        if noise is None:
            return np.full(n, self.preset.background_sigma)
        noise = np.broadcast_to(np.asarray(noise, dtype=float), (n,)).copy()
        if not np.all(np.isfinite(noise) & (noise > 0)):
            raise DeblendError(f"{self.name}: noise={noise!r}: expected positive background sigma(s)")
        return noise


# ---- devices -------------------------------------------------------------------------------------


def available_devices() -> list[str]:
    """Devices usable on this machine: ``"cpu"`` and, when present, ``"cuda"`` and ``"mps"``."""
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices.insert(0, "cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.insert(0 if "cuda" not in devices else 1, "mps")
    return devices


def check_device_name(device: str | None) -> str:
    """A device name as torch spells it (lower case), without looking for the device: a sentence for a bad name.

    Accepted: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` and ``mps``. For a run on a Dask cluster,
    whose workers may have devices this machine lacks (:func:`resolve_device` checks the device here).
    """
    name = "auto" if device is None else str(device).strip().lower()
    base, _, index = name.partition(":")
    if base not in ("auto", "cpu", "cuda", "mps") or (index and (base != "cuda" or not index.isdigit())):
        raise DeblendError(f"device {device!r} is not a device name: expected auto, cpu, cuda, cuda:N or mps")
    return name


def resolve_device(device: str | None = "auto") -> str:
    """``"auto"``: CUDA, then Apple MPS, then CPU. An absent device is a clear error listing what exists."""
    device = "auto" if device is None else str(device).lower()
    if device == "cpu":
        return device  # always there; spares importing torch for classical deblenders
    devices = available_devices()
    if device == "auto":
        return devices[0]
    base = device.split(":")[0]
    if base not in devices:
        raise DeblendError(
            f"device {device!r} is not available on this machine: expected one of auto, {', '.join(devices)}"
        )
    return device


# ---- registry -----------------------------------------------------------------------------------


def _entry_point_deblenders() -> dict[str, Any]:
    try:
        eps = entry_points(group=ENTRY_POINT_GROUP)
    except TypeError:  # Python < 3.10
        eps = entry_points().get(ENTRY_POINT_GROUP, [])
    return {ep.name: ep for ep in eps}


def _load_class(name: str) -> type[Deblender]:
    if name in BUILTIN_DEBLENDERS:
        module, attr = BUILTIN_DEBLENDERS[name].split(":")
        return getattr(importlib.import_module(module), attr)
    plugins = _entry_point_deblenders()
    if name in plugins:
        try:
            return plugins[name].load()
        except Exception as exc:
            raise DeblendError(f"deblender plugin {name!r} ({plugins[name].value}) failed to load: {exc}") from None
    known = sorted(set(BUILTIN_DEBLENDERS) | set(plugins))
    raise DeblendError(f"unknown deblender {name!r}: expected one of {', '.join(known)}")


def available_deblenders() -> dict[str, str]:
    """Names of the built-in and plugin deblenders, with their one-line descriptions."""
    out = {}
    for name in [*BUILTIN_DEBLENDERS, *sorted(_entry_point_deblenders())]:
        if name in out:
            continue
        try:
            out[name] = _load_class(name).description
        except DeblendError as exc:
            warnings.warn(str(exc), stacklevel=2)
    return out


def takes_positions(name: str) -> bool:
    """Whether deblender ``name`` uses given source positions (``uses_positions`` or ``needs_positions``)."""
    cls = _load_class(name)
    return bool(cls.uses_positions or cls.needs_positions)


@functools.lru_cache(maxsize=16)
def _cached_deblender(name: str, device: str, preset_name: str) -> Deblender:
    return _load_class(name)(device=device, preset=preset_name)


def get_deblender(name: str, device: str = "auto", preset: Any = None) -> Deblender:
    """A deblender instance by name; models load once per (name, device, preset) and are cached."""
    from ..presets import get_preset

    return _cached_deblender(str(name), resolve_device(device), get_preset(preset).name)


def load_weights(path: Path, model: str, required: set[str], retrain_hint: str) -> dict[str, Any]:
    """Load a model's weights file safely (see :func:`napari_deblend.deblenders.checkpoints.load_weights`)."""
    from .checkpoints import load_weights as load

    return load(path, model, required, retrain_hint)
