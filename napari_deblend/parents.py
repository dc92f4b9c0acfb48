"""Parents and children: which detection each deblended component belongs to, its id, and which rows are primary.

The survey pipelines' convention (LSST's ``parent``, ``deblend_nChild``,
``detect_isPrimary``): sep's detections are *parents*; the components a
deblender makes of them are their *children*. Every galaxy has exactly one
*primary* row, the one whose measurement to use:

- a detection with no child (not offered to the deblender, or in which the
  deblender found no galaxy) is primary itself: sep's measurement;
- a detection deblended alone (not in a sep blend) whose deblender answer is
  one galaxy is primary itself too: an isolated galaxy, confirmed, whose
  measurement is sep's (its one child is listed beside it, not primary);
- a detection of a sep blend none of whose children lies on it (within
  :data:`~napari_deblend.measurements.MATCH_RADIUS` of its position) is primary
  too: the deblender did not find the galaxy sep saw there (its children are
  other light of the blend), so sep's measurement answers for it;
- a child that is a *piece* (:func:`piece_children`) is never primary: one
  closer to a brighter child than the PSF's FWHM (:func:`min_child_separation`:
  in one band, two galaxies that close cannot be told from one galaxy with a
  knot; their light is one answer); in a sep blend, one that lies on none of
  the blend's detections (the network's extra
  light of a galaxy another row answers for); of a detection deblended alone,
  one that lies off it and that the deblender doubts is a galaxy of its own
  (``P_GALAXY`` below :data:`PIECE_P_GALAXY`). Of a detection deblended alone
  whose children are pieces but one, that one answers (its measurement leaves
  out the light the deblender gave the pieces, which sep's includes); one whose
  children are all pieces answers itself;
- otherwise a detection with children is not primary; its children are, each
  with the deblender's measurement.

A detection split into two or more children is an *unrecognised blend*: sep
saw one object where the deblender found several galaxies. A detection
deblended alone is split only by the components the deblender is sure of
(:func:`confirm_split`); the others are summed into their host.

Which detection a component belongs to (:func:`assign_parents`), within the
group it was deblended with (a sep blend, or one detection offered alone):

1. a component whose centre lies on the footprint of a detection *outside*
   the group, or off every footprint and outside the group's box, is a
   neighbour that fell on the stamp: it is no child of the group (the
   neighbour has its own answer) and is dropped;
2. the others are matched one-to-one to the group's detections within
   :data:`~napari_deblend.measurements.MATCH_RADIUS` pixels (Hungarian
   assignment), so that every detection keeps the component that is its galaxy;
3. an unmatched component goes to the detection whose footprint holds its
   centre, else to the nearest one.

Ids (:func:`child_ids`): a detection's id is its catalogue number ``n``
(:func:`position_numbers`); its
``j``-th child (brightest first, ``j`` = 1, 2, ...) has id ``j * S + n`` with
``S`` the power of ten above the number of detections (:func:`id_stride`):
with 650 detections, the children of detection 45 are 1045, 2045, ... The id
depends only on the detection and the component, not on which other blends
were deblended, so a viewer that deblends blends one by one gives the same ids
as a headless run.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from .measurements import MATCH_RADIUS, match_positions
from .moments import centroid, host_of

#: ``DEBLEND_FLAGS`` bits.
UNRECOGNISED_BLEND = 1  # a detection the deblender split into two or more galaxies (set on it and its children)
NOT_OFFERED = 2  # a detection not offered to the deblender (point-like, or only sep's blends were)
NO_CHILD = 4  # offered, but the deblender found no galaxy of it: sep's measurement is used
SPLIT_REFUSED = 8  # deblended alone, split by the deblender without enough confidence: its components summed
NOT_ANSWERED = 16  # in a sep blend, none of its children lies on it: its galaxy was not found, sep's measurement is used
PIECE = 32  # a child that is no galaxy of its own (see piece_children): listed, never primary
FLAG_NAMES = {UNRECOGNISED_BLEND: "unrecognised blend", NOT_OFFERED: "not offered", NO_CHILD: "no child",
              SPLIT_REFUSED: "split refused", NOT_ANSWERED: "not answered", PIECE: "piece"}
#: A child of a detection deblended alone that lies off it is a galaxy of its own only
#: with at least this ``P_GALAXY`` (chosen on the validation field: fewest missed
#: galaxies plus spurious rows; docs/evaluation/field/README.md).
PIECE_P_GALAXY = 0.8



def min_child_separation(fwhm_pixels: float | None) -> float:
    """The least distance (pixels) between two children that are both galaxies: the PSF's FWHM.

    Never below :data:`~napari_deblend.measurements.MATCH_RADIUS` (how near a
    child lies *on* a detection); ``None`` or a non-positive FWHM gives that
    radius. Chosen on the validation field: at one FWHM (3.5 px at ``lsst-i``)
    instead of 3 px the spurious primary rows fell by a fifth to a quarter for
    one or two blended galaxies lost (docs/evaluation/field/README.md).
    """
    if fwhm_pixels is None or not np.isfinite(fwhm_pixels) or fwhm_pixels <= 0:
        return float(MATCH_RADIUS)
    return max(float(MATCH_RADIUS), float(fwhm_pixels))


#: Per-component entries of ``DeblendResult.info`` (first axis = component), subset with the components.
PER_COMPONENT_INFO = ("flux_auto", "fluxerr_auto", "kron_radius", "flux_iso", "x2", "y2", "xy", "flux_correction",
                      "calibration_features", "flux_pred", "soft_masks", "component_sigma", "flux_sigma",
                      "galaxy_probabilities", "source_probabilities", "parents", "pieces")  # fmt: skip


#: Per-component ``info`` entries that add up when one component is summed into another (fluxes) ...
ADDED_INFO = ("flux_pred",)
#: ... and those that add in quadrature (independent uncertainties: ``FLUX_MODEL_ERR`` and the sigma images).
QUADRATURE_INFO = ("flux_sigma", "component_sigma")


def position_numbers(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Catalogue numbers of detections: 1-based rank by position (``y``, then ``x``), whatever their input order.

    A headless run numbers its detections so (the same whatever the tiling),
    and the viewer shows these numbers beside sep's own labels.
    """
    order = np.lexsort((np.asarray(x, float), np.asarray(y, float)))
    numbers = np.empty(len(order), np.int64)
    numbers[order] = np.arange(1, len(order) + 1)
    return numbers


def id_stride(n_detections: int) -> int:
    """The power of ten above the largest detection number (at least 10): the step between children's ids."""
    return 10 ** max(1, len(str(max(int(n_detections), 0))))


def child_ids(parents: np.ndarray, child_index: np.ndarray, stride: int) -> np.ndarray:
    """Ids of children: ``child_index * stride + parent`` (``child_index`` 1-based)."""
    return np.asarray(child_index, np.int64) * int(stride) + np.asarray(parents, np.int64)


def child_index(parents: np.ndarray) -> np.ndarray:
    """1-based rank of each child among the children of its parent, in the given (brightest-first) order."""
    parents = np.asarray(parents, np.int64)
    out = np.zeros(len(parents), np.int64)
    seen: dict[int, int] = {}
    for i, parent in enumerate(parents):
        seen[int(parent)] = seen.get(int(parent), 0) + 1
        out[i] = seen[int(parent)]
    return out


def labels_at(segmentation: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Segmentation label under each ``(y, x)`` position (0 off the map or on background)."""
    positions = np.asarray(positions, float).reshape(-1, 2)
    if not len(positions):
        return np.zeros(0, np.int64)
    h, w = np.shape(segmentation)
    row = np.rint(positions[:, 0]).astype(np.int64)
    col = np.rint(positions[:, 1]).astype(np.int64)
    inside = (row >= 0) & (row < h) & (col >= 0) & (col < w) & np.isfinite(positions).all(axis=1)
    out = np.zeros(len(positions), np.int64)
    out[inside] = np.asarray(segmentation)[row[inside], col[inside]]
    return out


def assign_parents(
    positions: np.ndarray,
    labels: np.ndarray,
    members: np.ndarray,
    member_positions: np.ndarray,
    bbox: tuple[int, int, int, int],
    max_distance: float = MATCH_RADIUS,
) -> np.ndarray:
    """The detection each component of a group belongs to (0: a neighbour's light, not the group's).

    Parameters
    ----------
    positions : numpy.ndarray
        ``(K, 2)`` component centres ``(y, x)``, image pixels.
    labels : numpy.ndarray
        ``(K,)`` segmentation label under each centre (:func:`labels_at`).
    members : numpy.ndarray
        ``(M,)`` catalogue ids of the group's detections.
    member_positions : numpy.ndarray
        ``(M, 2)`` their ``(y, x)``, same pixels.
    bbox : tuple of int
        ``(ymin, ymax, xmin, xmax)`` of the group (footprints and Kron ellipses).
    max_distance : float
        Radius of the one-to-one match, pixels.

    Returns
    -------
    numpy.ndarray
        ``(K,)`` parent ids (see the module docstring for the rules).
    """
    positions = np.asarray(positions, float).reshape(-1, 2)
    labels = np.asarray(labels, np.int64)
    members = np.asarray(members, np.int64)
    member_positions = np.asarray(member_positions, float).reshape(-1, 2)
    ymin, ymax, xmin, xmax = bbox
    y, x = positions[:, 0], positions[:, 1]
    in_box = (y >= ymin - 0.5) & (y < ymax - 0.5) & (x >= xmin - 0.5) & (x < xmax - 0.5)
    on_member = np.isin(labels, members)
    kept = np.flatnonzero(on_member | ((labels == 0) & in_box))
    parents = np.zeros(len(positions), np.int64)
    if not len(kept) or not len(members):
        return parents
    for i, j in match_positions(positions[kept], member_positions, max_distance):
        parents[kept[i]] = members[j]
    for k in kept:
        if parents[k]:
            continue
        if on_member[k]:
            parents[k] = labels[k]
        else:
            d = np.hypot(*(member_positions - positions[k]).T)
            parents[k] = members[int(np.argmin(d))]
    return parents


def subset_result(result: Any, keep: np.ndarray) -> Any:
    """A :class:`~napari_deblend.deblenders.base.DeblendResult` with only the components ``keep`` (bool or indices).

    The residual is recomputed (the dropped components' light stays in it);
    per-component ``info`` entries are subset too, and a SExtractor
    ``segmentation`` is relabelled.
    """
    index = np.flatnonzero(keep) if np.asarray(keep).dtype == bool else np.asarray(keep, int)
    if len(index) == result.n_components and np.array_equal(index, np.arange(result.n_components)):
        return result
    info = dict(result.info)
    k = result.n_components
    for key in PER_COMPONENT_INFO:
        value = info.get(key)
        if value is not None and np.ndim(value) >= 1 and len(value) == k:
            info[key] = np.asarray(value)[index]
    if "segmentation" in info:
        lut = np.zeros(k + 1, np.int32)
        lut[index + 1] = np.arange(1, len(index) + 1)
        info["segmentation"] = lut[np.asarray(info["segmentation"])]
    components = result.components[index]
    return replace(result, components=components, positions=result.positions[index],
                   masks=None if result.masks is None else np.asarray(result.masks)[index],
                   residual=result.blend - components.sum(axis=0), info=info)


def group_children(result: Any, blend: Any, segmentation: np.ndarray, offset: tuple[int, int] = (0, 0),
                   min_separation: float = MATCH_RADIUS) -> Any:
    """Keep a group's own components and record their parents in ``info["parents"]``.

    Parameters
    ----------
    result : DeblendResult
        The deblender's result on the group's stamp (``origin`` in the same pixels as ``blend``).
    blend : Blend
        The group (a sep blend, or one detection).
    segmentation : numpy.ndarray
        Segmentation map whose labels are the catalogue ids.
    offset : tuple of int
        ``(y, x)`` of the segmentation map's pixel (0, 0) in the pixels of ``result.origin`` and ``blend``.
    min_separation : float
        A child closer than this (pixels) to a brighter one is a piece
        (:func:`min_child_separation` of the PSF's FWHM in a run and in the viewer).

    Returns
    -------
    DeblendResult
        The components that belong to the group (see :func:`assign_parents`),
        with ``info["parents"]`` (parent id of each) and ``info["dropped"]``
        (how many neighbours were left out) and ``info["pieces"]`` (which
        are pieces, :func:`piece_children`, as the run's catalogue flags them).
    """
    centres = np.asarray(result.positions, float).reshape(-1, 2) + np.asarray(result.origin, float)
    labels = labels_at(segmentation, centres - np.asarray(offset, float))
    parents = assign_parents(centres, labels, blend.members, blend.positions, blend.bbox)
    kept = subset_result(result, parents > 0)
    kept.info["parents"] = parents[parents > 0]
    kept.info["dropped"] = int((parents == 0).sum())
    if len(blend.members) == 1:
        kept = confirm_split(kept)
    kept_centres = np.asarray(kept.positions, float).reshape(-1, 2) + np.asarray(kept.origin, float)
    kept.info["pieces"] = piece_children(kept_centres, np.asarray(kept.fluxes, float).sum(axis=1),
                                         kept.info.get("galaxy_probabilities"), blend.positions,
                                         min_separation=min_separation)
    if kept.info.get("pieces_to_host"):
        kept = absorb_pieces(kept)
    return kept


def absorb_pieces(result: Any) -> Any:
    """Give each piece's light to a galaxy child of the same detection (the one brightest at its centroid).

    For deblenders that ask for it (``info["pieces_to_host"]``): the light the
    deblender gave a knot, arm or clump of a galaxy then counts in that galaxy's
    measurement, as sep's ``FLUX_AUTO`` counts it. A piece whose detection has no
    galaxy child stays a piece. ``info["parents"]`` and ``info["pieces"]`` are
    required; ``info["absorbed_pieces"]`` holds how many pieces each kept child took.
    """
    pieces = np.asarray(result.info["pieces"], bool).reshape(-1)
    parents = np.asarray(result.info["parents"]).reshape(-1)
    hosts = {int(j): np.flatnonzero(~pieces & (parents == parents[j])) for j in np.flatnonzero(pieces)}
    hosts = {j: galaxies for j, galaxies in hosts.items() if len(galaxies)}
    if not hosts:
        return result
    merged, taken = _sum_into_hosts(result, hosts)
    merged.info["absorbed_pieces"] = taken
    return merged


def _sum_into_hosts(result: Any, hosts: dict[int, np.ndarray]) -> tuple[Any, np.ndarray]:
    """Add each component ``j`` of ``hosts`` to the one of ``hosts[j]`` brightest at its centroid, and drop it.

    The hosts are chosen on the components as given (the bands summed); masks
    are joined too, ``flux_pred`` added and the uncertainties (``flux_sigma``,
    ``component_sigma``) added in quadrature. Returns the result of the components left (per-component
    ``info`` subset with them, :func:`subset_result`) and how many components
    each of them took.
    """
    images = result.components.sum(axis=1)  # (K, H, W): the bands summed
    components = result.components.copy()
    masks = None if result.masks is None else np.asarray(result.masks, bool).copy()
    k = result.n_components
    info = dict(result.info)
    summed = {key: np.asarray(info[key], np.float64).copy() for key in (*ADDED_INFO, *QUADRATURE_INFO)
              if info.get(key) is not None and np.ndim(info[key]) >= 1 and len(info[key]) == k}
    taken = np.zeros(k, np.int32)
    keep = np.ones(k, bool)
    for j, candidates in hosts.items():
        host = candidates[host_of(images[np.append(candidates, j)], len(candidates))]
        components[host] += components[j]
        if masks is not None:
            masks[host] |= masks[j]
        for key, values in summed.items():
            values[host] = values[host] + values[j] if key in ADDED_INFO else np.hypot(values[host], values[j])
        taken[host] += 1
        keep[j] = False
    info.update({key: values.astype(np.asarray(result.info[key]).dtype) for key, values in summed.items()})
    return subset_result(replace(result, components=components, masks=masks, info=info), keep), taken[keep]


def galaxy_scores(result: Any) -> np.ndarray | None:
    """``(K,)``: how sure the deblender is that each component is a galaxy of its own (None: it does not say).

    ``unet`` and ``vae``: their split verifier's probability that each component
    is a galaxy of its own (``info["galaxy_probabilities"]``) when their weights
    have one, else the learned source finder's probability of a galaxy centre at
    each component, on the stamp as given (``info["source_probabilities"]``);
    ``peeling``: its counter's first look at the stamp, the probability of two or
    more galaxies (``info["count_probabilities"]``), the same for every component.
    """
    centres = result.info.get("source_probabilities")
    if centres is not None and np.size(centres) == result.n_components:
        verified = result.info.get("galaxy_probabilities")
        if verified is not None and np.size(verified) == result.n_components:
            return np.asarray(verified, float).reshape(-1)
        return np.asarray(centres, float).reshape(-1)
    probabilities = result.info.get("count_probabilities")
    if probabilities is None:
        return None
    return np.full(result.n_components, float(np.sum(np.asarray(probabilities, float)[2:])))


def confirm_split(result: Any) -> Any:
    """Keep the fainter children of a detection deblended alone only where the deblender is sure of them.

    A detection that sep saw as one object is split (an unrecognised blend) only
    by its fainter components whose :func:`galaxy_scores` reach
    ``info["min_split_probability"]``; the others are knots, arms or clumps of a
    galaxy and are summed into their host (the kept component brightest at
    their centroid). When only the brightest is left, it is the sum of all (its
    position: the centroid of the sum) and ``info["split_refused"]`` holds how
    many components there were. Results without those entries are returned unchanged.
    """
    threshold = result.info.get("min_split_probability")
    scores = galaxy_scores(result)
    if result.n_components < 2 or threshold is None or scores is None:
        return result
    fluxes = result.components.reshape(result.n_components, -1).sum(axis=1)
    brightest = int(np.argmax(fluxes))
    keep = scores >= threshold
    keep[brightest] = True
    if keep.all():
        return result
    kept = np.flatnonzero(keep)
    merged, _ = _sum_into_hosts(result, {int(j): kept for j in np.flatnonzero(~keep)})
    if len(kept) == 1:  # one galaxy after all: at the centroid of the sum (no positive pixel: the brightest's)
        position = np.array([centroid(merged.components[0])])
        if np.isfinite(position).all():
            merged = replace(merged, positions=position)
        merged.info["split_refused"] = result.n_components
    return merged


def answered_detections(numbers: np.ndarray, positions: np.ndarray, child_parents: np.ndarray,
                        child_positions: np.ndarray, max_distance: float = MATCH_RADIUS) -> np.ndarray:
    """``(N,)`` bool: whether some child of each detection lies within ``max_distance`` pixels of it.

    ``positions`` and ``child_positions`` are ``(y, x)`` in the same pixels.
    """
    numbers = np.asarray(numbers, np.int64)
    row_of = {int(n): i for i, n in enumerate(numbers)}
    positions = np.asarray(positions, float).reshape(-1, 2)
    answered = np.zeros(len(numbers), bool)
    for parent, position in zip(np.asarray(child_parents, np.int64), np.asarray(child_positions, float).reshape(-1, 2)):
        row = row_of.get(int(parent))
        if row is not None and np.hypot(*(position - positions[row])) <= max_distance:
            answered[row] = True
    return answered


def piece_children(child_positions: np.ndarray, child_fluxes: np.ndarray, child_p_galaxy: np.ndarray | None,
                   detection_positions: np.ndarray, max_distance: float = MATCH_RADIUS,
                   min_p_galaxy: float = PIECE_P_GALAXY, min_separation: float | None = None) -> np.ndarray:
    """``(K,)`` bool: which children of one stamp are pieces of a galaxy, not galaxies of their own.

    A child within ``min_separation`` pixels of a brighter child is a piece (two
    galaxies that close are one answer). A child farther than ``max_distance``
    from every detection of the stamp is a piece when the stamp is a sep blend
    (two or more detections: each galaxy sep saw there is answered by the child
    on it, or by the detection itself), or when the stamp is one detection and
    its ``child_p_galaxy`` is below ``min_p_galaxy`` (a NaN probability: no piece).

    Parameters
    ----------
    child_positions, detection_positions : numpy.ndarray
        ``(K, 2)`` and ``(N, 2)`` ``(y, x)`` of the children and of the stamp's detections, in the same pixels.
    child_fluxes : numpy.ndarray
        ``(K,)`` each child's flux.
    child_p_galaxy : numpy.ndarray or None
        ``(K,)`` the deblender's probability that each child is a galaxy of its own (``P_GALAXY``).
    max_distance : float
        How near a detection a child lies *on* it, pixels.
    min_p_galaxy : float
        The least ``P_GALAXY`` of a galaxy of its own off a detection deblended alone.
    min_separation : float or None
        The least distance of a galaxy of its own from a brighter child, pixels
        (None: ``max_distance``; see :func:`min_child_separation`).

    Returns
    -------
    numpy.ndarray
    """
    child_positions = np.asarray(child_positions, float).reshape(-1, 2)
    detections = np.asarray(detection_positions, float).reshape(-1, 2)
    k = len(child_positions)
    p_galaxy = np.full(k, np.nan) if child_p_galaxy is None else np.asarray(child_p_galaxy, float).reshape(-1)
    fluxes = np.nan_to_num(np.asarray(child_fluxes, float).reshape(-1), nan=-np.inf)
    index = np.arange(k)
    pieces = np.zeros(k, bool)
    separation = max_distance if min_separation is None else float(min_separation)
    for j in range(k):
        # a brighter child (of equal fluxes, the first)
        brighter = (fluxes > fluxes[j]) | ((fluxes == fluxes[j]) & (index < j))
        if brighter.any() and np.hypot(*(child_positions[brighter] - child_positions[j]).T).min() <= separation:
            pieces[j] = True
        elif len(detections) and np.hypot(*(detections - child_positions[j]).T).min() > max_distance:
            pieces[j] = len(detections) >= 2 or bool(p_galaxy[j] < min_p_galaxy)
    return pieces


def parent_summary(numbers: np.ndarray, child_parents: np.ndarray, offered: np.ndarray,
                   alone: np.ndarray | None = None, refused: np.ndarray | None = None,
                   answered: np.ndarray | None = None, pieces: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Per detection: number of children, primary flag and ``DEBLEND_FLAGS``; per child: its flags and primary flag.

    Parameters
    ----------
    numbers : numpy.ndarray
        ``(N,)`` detection numbers.
    child_parents : numpy.ndarray
        ``(K,)`` parent number of each child.
    offered : numpy.ndarray
        ``(N,)`` bool: whether each detection was offered to the deblender.
    alone : numpy.ndarray, optional
        ``(N,)`` bool: whether each detection was deblended alone (not in a sep blend).
        One of these whose deblender answer is one galaxy stays primary itself (the
        deblender confirmed an isolated galaxy: sep's measurement stands, as for
        the survey pipelines' isolated parents); its child is listed beside it.
    refused : numpy.ndarray, optional
        ``(K,)`` bool: whether each child is the sum of a split the deblender was not sure
        of (:func:`confirm_split`); its detection and it are flagged :data:`SPLIT_REFUSED`.
    answered : numpy.ndarray, optional
        ``(N,)`` bool: whether some child lies on each detection (:func:`answered_detections`).
        A detection of a sep blend with children of which none does is primary itself and
        flagged :data:`NOT_ANSWERED`; its children stay as they are.
    pieces : numpy.ndarray, optional
        ``(K,)`` bool: whether each child is a piece of a galaxy (:func:`piece_children`):
        flagged :data:`PIECE`, never primary, not counted as a galaxy of its detection.

    Returns
    -------
    dict
        ``n_child``, ``primary``, ``flags`` (per detection), ``child_flags`` and
        ``child_primary`` (per child).
    """
    numbers = np.asarray(numbers, np.int64)
    child_parents = np.asarray(child_parents, np.int64)
    pieces = np.zeros(len(child_parents), bool) if pieces is None else np.asarray(pieces, bool).reshape(-1)
    order = {int(n): i for i, n in enumerate(numbers)}
    n_child = np.zeros(len(numbers), np.int32)
    n_galaxy = np.zeros(len(numbers), np.int32)  # children that are galaxies of their own
    for parent, piece in zip(child_parents, pieces):
        if int(parent) in order:
            n_child[order[int(parent)]] += 1
            n_galaxy[order[int(parent)]] += not piece
    flags = np.zeros(len(numbers), np.int32)
    flags[n_galaxy >= 2] |= UNRECOGNISED_BLEND
    flags[~np.asarray(offered, bool)] |= NOT_OFFERED
    flags[np.asarray(offered, bool) & (n_child == 0)] |= NO_CHILD
    if refused is not None:
        flags[np.isin(numbers, child_parents[np.asarray(refused, bool)])] |= SPLIT_REFUSED
    child_flags = np.array([flags[order[int(p)]] & (UNRECOGNISED_BLEND | SPLIT_REFUSED) if int(p) in order else 0
                            for p in child_parents], np.int32).reshape(-1)  # fmt: skip
    child_flags[pieces] |= PIECE
    alone = np.zeros(len(numbers), bool) if alone is None else np.asarray(alone, bool)
    # one child, or only pieces: sep's measurement answers (a galaxy child beside pieces answers itself)
    isolated = alone & (n_child >= 1) & ((n_child == 1) | (n_galaxy == 0))
    unanswered = np.zeros(len(numbers), bool)
    if answered is not None:
        unanswered = (n_child >= 1) & ~alone & ~np.asarray(answered, bool)
        flags[unanswered] |= NOT_ANSWERED
    child_primary = np.array([not isolated[order[int(p)]] if int(p) in order else True
                              for p in child_parents], bool).reshape(-1) & ~pieces  # fmt: skip
    return {"n_child": n_child, "primary": (n_child == 0) | isolated | unanswered, "flags": flags,
            "child_flags": child_flags, "child_primary": child_primary}
