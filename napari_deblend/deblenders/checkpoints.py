"""Reading weights and checkpoints safely: no code from a file, no changed or damaged shipped weights.

- :func:`load_torch_file`: ``torch.load`` with ``weights_only=True`` (tensors, numbers,
  strings and containers; a file holding other Python objects is refused, since
  unpickling them could run code), and our own message, never torch's.
- :func:`load_weights`: a deblender's weights: the SHA-256 recorded in the model card
  beside them (``<name>.json``, key ``sha256``) must match, no tensor may hold NaN
  (and :func:`build_network` refuses inf in a learned weight; buffers may hold inf, e.g. "no clip").
- :func:`build_network`: a network from its saved config and tensors, checked on torch's
  ``meta`` device first, so a config of unknown keys or absurd sizes allocates nothing.
- :func:`record_weights_sha256`: what installing new weights calls to update the card.
- :func:`weights_version`, :func:`deblender_version`: the version string of weights files or of a
  deblender (``sha256:`` and 12 hex digits): the catalogue's ``MODEL_VERSION`` and what a result's
  ``model`` names.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

from .base import DeblendError

#: Model-card key of the weights file's SHA-256 (hex), checked by :func:`load_weights`.
CARD_SHA256_KEY = "sha256"


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_version(*files: str | Path) -> str:
    """``sha256:`` and 12 hex digits naming the weights in ``files`` (one file: its own SHA-256).

    Several files (a deblender and its source finder) are named by the SHA-256 of
    their digests. The digests are cached per path, size and modification time.
    """
    digests = []
    for file in files:
        path = Path(file).resolve()
        stat = path.stat()
        digests.append(_cached_sha256(str(path), stat.st_size, stat.st_mtime_ns))
    if len(digests) == 1:
        return f"sha256:{digests[0][:12]}"
    return f"sha256:{hashlib.sha256(''.join(digests).encode()).hexdigest()[:12]}"


def deblender_version(deblender: Any) -> str:
    """A deblender's version: :func:`weights_version` of its ``weights`` and, for the models that find their
    sources with the learned source finder (``vae``, ``unet``), its ``finder.weights`` too; else its ``version``.
    """
    files = [getattr(deblender, "weights", None), getattr(getattr(deblender, "finder", None), "weights", None)]
    files = [f for f in files if f is not None]
    return weights_version(*files) if files else str(getattr(deblender, "version", ""))


@functools.lru_cache(maxsize=16)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    """:func:`file_sha256` of ``path``, remembered while its size and modification time stay."""
    return file_sha256(path)


def record_weights_sha256(weights: str | Path) -> str:
    """Write the SHA-256 of ``weights`` into its model card (``<weights>.json``, created if absent); returns it.

    Whoever installs new weights calls this, so that :func:`load_weights` can tell the
    shipped file from a changed or damaged one.
    """
    weights = Path(weights)
    card_path = weights.with_suffix(".json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    card[CARD_SHA256_KEY] = file_sha256(weights)
    card_path.write_text(json.dumps(card, indent=2))
    return card[CARD_SHA256_KEY]


def _check_sha256(path: Path, model: str, remedy: str) -> None:
    """Refuse weights whose bytes differ from the SHA-256 recorded in the model card beside them (if any)."""
    card_path = path.with_suffix(".json")
    if not card_path.exists():
        return
    try:
        expected = json.loads(card_path.read_text()).get(CARD_SHA256_KEY)
    except (OSError, ValueError, AttributeError) as exc:
        raise DeblendError(f"{model} model card {card_path} cannot be read as a JSON object "
                           f"({type(exc).__name__}); {remedy}") from None
    if expected is None:
        return
    actual = file_sha256(path)
    if actual != str(expected).lower():
        raise DeblendError(
            f"{model} weights {path} do not match the SHA-256 in their model card {card_path.name} "
            f"(file {actual[:12]}..., card {str(expected)[:12]}...): the file was changed or damaged; {remedy}"
        )


def load_torch_file(path: str | Path, what: str, remedy: str, unreadable: str | None = None) -> Any:
    """``torch.load`` on the CPU with ``weights_only=True``: tensors, numbers, strings and containers, never code.

    Parameters
    ----------
    path : str or Path
        The file.
    what : str
        What the file should be, for messages (e.g. ``"peeling weights"``).
    remedy : str
        What to do about a bad file (ends every message).
    unreadable : str, optional
        The sentence for a file torch cannot read (default ``"<what> <path>: not a readable torch file"``).

    Raises
    ------
    DeblendError
        The file is missing, is not a torch file, or holds other Python objects
        (refused: unpickling them could run code).
    """
    import pickle

    import torch

    path = Path(path)
    if not path.is_file():
        raise DeblendError(f"{what} {path}: {'not a file' if path.exists() else 'no such file'}; {remedy}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "global" in str(exc).lower():  # torch refused a reference to a Python object (a class, a function)
            raise DeblendError(
                f"{what} {path}: holds Python objects other than tensors, numbers and strings, refused since "
                f"loading them could run code; {remedy}"
            ) from None
        unreadable = unreadable or f"{what} {path}: not a readable torch file"
        raise DeblendError(f"{unreadable} (not a torch file); {remedy}") from None
    except Exception as exc:  # zip, pickle and storage errors of every kind
        detail = (str(exc).strip().splitlines() or [""])[0][:160]
        detail = "" if "weights_only" in detail else f": {detail}"
        unreadable = unreadable or f"{what} {path}: not a readable torch file"
        raise DeblendError(f"{unreadable} ({type(exc).__name__}{detail}); {remedy}") from None


def non_finite_tensors(obj: Any, prefix: str = "", allow_inf: bool = False) -> list[str]:
    """Dotted names of the floating-point tensors in a (nested) checkpoint that hold NaN (or, unless ``allow_inf``, inf)."""
    import torch

    if isinstance(obj, torch.Tensor):
        if not obj.is_floating_point():
            return []
        bad = torch.isnan(obj).any() if allow_inf else ~torch.isfinite(obj).all()
        return [prefix or "tensor"] if bool(bad) else []
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return []
    bad: list[str] = []
    for key, value in items:
        bad += non_finite_tensors(value, f"{prefix}.{key}" if prefix else str(key), allow_inf)
    return bad


def load_weights(path: Path, model: str, required: set[str], retrain_hint: str) -> dict[str, Any]:
    """Load a model's torch checkpoint on the CPU, refusing anything but a sound weights file, with a clear error.

    Checks, in order: the file exists; its SHA-256 equals the one in the model card
    beside it (when the card records one, as the shipped cards do); it loads with
    ``weights_only=True``; it is a dict holding ``required``; no tensor is NaN (inf in a learned
    weight is refused when the network is built, see :func:`build_network`).

    Parameters
    ----------
    path : Path
        The weights file.
    model : str
        Model name, for messages.
    required : set of str
        Keys the checkpoint must hold.
    retrain_hint : str
        The command that retrains the weights (named in every error).
    """
    path = Path(path)
    remedy = f"re-install napari-deblend or retrain with `{retrain_hint}`"
    if not path.is_file():
        raise DeblendError(f"{model} weights {path} are missing: {remedy}")
    _check_sha256(path, model, remedy)
    corrupted = f"{model} weights {path} are corrupted or not a {model} checkpoint"
    checkpoint = load_torch_file(path, f"{model} weights", f"retrain with `{retrain_hint}`", unreadable=corrupted)
    if not isinstance(checkpoint, dict) or not required <= set(checkpoint):
        missing = sorted(required - set(checkpoint)) if isinstance(checkpoint, dict) else sorted(required)
        raise DeblendError(f"{corrupted} (no {', '.join(missing)}); retrain with `{retrain_hint}`")
    bad = non_finite_tensors(checkpoint, allow_inf=True)  # inf in a learned weight: see build_network
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise DeblendError(f"{model} weights {path}: NaN values in {', '.join(bad[:3])}{more}; {remedy}")
    return checkpoint


def build_network(cls: Any, config: Any, state: Any, *, refusal: str, remedy: str) -> Any:
    """``cls(**config)`` holding the tensors of ``state``; a clear error when the config or the tensors do not fit.

    The network is first built without memory (torch's ``meta`` device) and its
    parameter shapes compared with the saved tensors, so a config of unknown keys,
    negative or absurd sizes is refused before anything is allocated: the real
    network is never larger than the weights file.

    Parameters
    ----------
    cls : type
        The ``torch.nn.Module`` class.
    config : dict
        Its keyword arguments, as saved with the weights.
    state : dict
        Its state dict, as saved.
    refusal : str
        How every message starts, naming the file and the network
        (e.g. ``"unet weights X do not fit the network"``).
    remedy : str
        What to do about it (ends every message).
    """
    import torch

    def refuse(detail: str) -> DeblendError:
        return DeblendError(f"{refusal} ({detail}); {remedy}")

    if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
        raise refuse(f"its config is {type(config).__name__}, expected a dict of named settings")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise refuse("its state is not a dict of tensors")
    try:
        with torch.device("meta"):
            skeleton = cls(**config)
            shapes = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
            parameters = [name for name, _ in skeleton.named_parameters()]
    except Exception as exc:  # unknown keys (TypeError), negative sizes (RuntimeError), bad values (ValueError)
        raise refuse(f"config {json.dumps(config, default=str)[:200]}: {type(exc).__name__}: "
                     f"{' '.join(str(exc).split())[:160]}") from None
    saved = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != saved:
        wrong = sorted(k for k in set(shapes) | set(saved) if shapes.get(k) != saved.get(k))
        raise refuse(f"{len(wrong)} tensor(s) of another name or shape, e.g. {wrong[0]}")
    infinite = [name for name in parameters if not bool(torch.isfinite(state[name]).all())]
    if infinite:  # buffers may hold inf (e.g. "no clipping" bounds), learned weights may not
        raise refuse(f"inf values in {', '.join(infinite[:3])}")
    try:
        module = cls(**config)
        module.load_state_dict(state)
    except Exception as exc:
        raise refuse(f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
    return module


def load_part(cls: Any, checkpoint: dict, key: str, *, owner: str, what: str, remedy: str,
              n_features: int | None = None) -> Any:
    """The network ``checkpoint[key]`` of ``cls`` built from ``checkpoint[key + "_config"]``.

    A clear :class:`~napari_deblend.deblenders.base.DeblendError` beginning with
    ``owner`` (e.g. ``"peeling weights X"``) and ending with ``remedy`` when the
    config is missing, the tensors do not fit (:func:`build_network`), or, with
    ``n_features``, a perceptron part takes another number of features.
    """
    if f"{key}_config" not in checkpoint:
        raise DeblendError(f"{owner}: {what} has no {key}_config; {remedy}")
    part = build_network(cls, checkpoint[f"{key}_config"], checkpoint[key],
                         refusal=f"{owner}: {what} does not fit its network", remedy=remedy)
    if n_features is not None and part.config["n_features"] != n_features:
        raise DeblendError(f"{owner}: {what} takes {part.config['n_features']} features, "
                           f"this version measures {n_features}; {remedy}")
    return part


def load_training_checkpoint(path: str | Path, required: set[str]) -> dict[str, Any]:
    """A resumable training checkpoint (tensors, optimiser states, numbers, strings), loaded without running code.

    Parameters
    ----------
    path : str or Path
        ``OUT/checkpoint.pt`` (or a phase's ``OUT/<phase>_checkpoint.pt``) of a training run.
    required : set of str
        Keys the checkpoint must hold.

    Raises
    ------
    DeblendError
        Not a torch file, other Python objects in it, or keys missing.
    """
    remedy = "delete it, or train without --resume to start again"
    state = load_torch_file(path, "training checkpoint", remedy)
    if not isinstance(state, dict) or not required <= set(state):
        missing = sorted(required - set(state)) if isinstance(state, dict) else sorted(required)
        raise DeblendError(f"training checkpoint {path}: not a checkpoint of this training "
                           f"(no {', '.join(missing)}); {remedy}")
    return state
