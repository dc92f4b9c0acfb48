"""napari layer operations of the result layers: make a layer without adding it, add it without
making it active, and give existing layers new data under one refresh.

Re-filling an existing layer is much cheaper than adding one, but each napari
setter (``data``, ``translate``) re-slices the layer and makes the viewer
recompute the extent of every layer (~50 ms a setter here). Re-fills are
therefore batched (:func:`refill_layers`): the setters run with refreshes
and the viewer's extent update held back, then each layer refreshes once and
the viewer updates its extent once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np


def new_layer(kind: str, data: Any, kwargs: dict[str, Any]) -> Any:
    """A napari layer of ``kind`` ("image", "labels" or "points"), not yet in a viewer (``viewer.add_<kind>`` minus the add)."""
    from napari.layers import Image, Labels, Points

    return {"image": Image, "labels": Labels, "points": Points}[kind](data, **kwargs)


@contextmanager
def added_inactive(viewer: Any) -> Iterator[None]:
    """Layers added inside the block do not become the active layer (the field image stays active).

    napari makes an added layer active, which switches the layer controls to it
    (and our panel then switches them back): two of the costliest parts of adding a layer.
    """
    layers = viewer.layers
    if not hasattr(layers, "_activate_on_insert"):  # another napari: added layers become active
        yield
        return
    before = layers._activate_on_insert
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = before


@contextmanager
def viewer_extent_held(viewer: Any, layers: list[Any]) -> Iterator[None]:
    """Hold back the viewer's extent update (dims ranges) on these layers' data and place changes; do it once after."""
    update = getattr(viewer, "_on_layers_change", None)
    if update is None:  # another napari: no batching, every setter updates the viewer
        yield
        return
    with ExitStack() as stack:
        for layer in layers:
            for name in ("data", "translate", "scale"):
                emitter = getattr(layer.events, name, None)
                if emitter is not None:
                    stack.enter_context(emitter.blocker(update))
        yield
    update()


def _skip_thumbnail(*args: Any, **kwargs: Any) -> None:
    return None


@contextmanager
def _thumbnail_held(layer: Any) -> Iterator[None]:
    """Skip a layer's thumbnail updates inside the block (napari makes one per display setter).

    The layer's refresh after the block makes the thumbnail once; a hidden layer
    makes it when shown again (napari refreshes a layer when it becomes visible).
    """
    if "_update_thumbnail" in vars(layer) or not callable(getattr(layer, "_update_thumbnail", None)):
        yield  # already held, or another napari
        return
    layer._update_thumbnail = _skip_thumbnail
    try:
        yield
    finally:
        del layer._update_thumbnail


def refill_layers(viewer: Any, refills: list[tuple[Any, Any, dict[str, Any]]]) -> None:
    """Give existing layers new data, place, name and display settings, refreshing each once.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer holding the layers.
    refills : list of tuple
        ``(layer, data, kwargs)``: the layer, its new data and the layer
        keyword arguments to apply (see :func:`refill`).

    Notes
    -----
    Image and labels layers are re-filled with their refreshes and thumbnail
    updates held back, then refreshed once; napari skips the refresh of a hidden
    layer until it is shown. Points layers are re-filled one by one (their view indices must
    follow each change). The viewer's extent is updated once at the end.
    """
    layers = [layer for layer, _, _ in refills]
    with viewer_extent_held(viewer, layers):
        held = [(layer, data, kwargs) for layer, data, kwargs in refills if layer._type_string != "points"]
        with ExitStack() as stack:
            for layer, _, _ in held:
                if hasattr(layer, "_block_refresh"):
                    stack.enter_context(layer._block_refresh())
                stack.enter_context(_thumbnail_held(layer))
            for layer, data, kwargs in held:
                refill(layer, data, kwargs)
        for layer, _, _ in held:
            if layer.visible:
                layer.refresh()
        for layer, data, kwargs in refills:
            if layer._type_string == "points":
                refill(layer, data, kwargs)


def refill(layer: Any, data: Any, kwargs: dict[str, Any]) -> None:
    """Give an existing layer another result's data, place, name and display settings (only what changed)."""
    visible = kwargs.get("visible", True)
    # a hidden Points layer keeps stale view indices, and new features then fail to index them
    if layer._type_string == "points" and not layer.visible:
        layer.visible = True
    if layer._type_string == "points" and "features" in kwargs:
        set_points(layer, data, kwargs["features"])
    else:
        layer.data = data
    for name in ("scale", "translate", "contrast_limits", "gamma"):
        if name in kwargs and not np.allclose(np.asarray(getattr(layer, name), float)[-2:] if name in ("scale", "translate")
                                              else np.asarray(getattr(layer, name), float), kwargs[name]):
            setattr(layer, name, kwargs[name])
    if layer.name != kwargs["name"]:
        layer.name = kwargs["name"]
    if layer.visible != visible:
        layer.visible = visible


def set_points(layer: Any, data: Any, features: Any) -> None:
    """New positions and features for a Points layer under one refresh (each setter alone re-draws it)."""
    # the data setter's own refresh must run: it moves the view indices that the text labels follow
    with layer.events.blocker_all(), _thumbnail_held(layer):
        layer.data = data
        layer.features = features
    layer.refresh()
