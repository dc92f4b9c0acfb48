"""Viewer layers of deblending results, added without stalling the UI thread.

Two kinds of layers:

- **Mosaic layers**, four per model whatever the number of blends: the model
  image (Σ components), the residual, the masks and the positions of every
  blend deblended with that model, painted where they belong in the field
  (:class:`~napari_deblend.mosaic.ResultMosaic`). A new result is painted in
  and shown at once; those of a run of many blends are painted into the
  mosaic's arrays as they come (~0.2 ms each) and shown together when the run
  ends (:meth:`ResultLayers.hold_mosaics`).
- **Detail layers** of the *selected* blend, as made by
  :func:`~napari_deblend.layers.deblend_result_layers`: one layer per component
  (``blend 12 · peeling · component 1``), residual, masks, positions; for every
  model (and kept earlier run) of that blend, so a user can toggle between
  them. They follow the selection.

Every change to the layer list is one task of a queue that a zero-interval
``QTimer`` works through one task per event-loop turn, so panning and zooming
go on between them. A task that changes what the canvas draws runs with the
canvas's repaints held; the canvas repaints in a turn of its own after it, and
the next task waits one frame (``FRAME_MS``), so a task and a repaint never add
up into one stall. What else the task changed in the window (the layer
controls, the layer list's rows) is painted before the canvas is let go, in a
turn of its own too: Qt would paint both in one window repaint. A new layer is
added in parts (:mod:`._layer_parts`): one task makes the layer, the next adds
it to the list, and its visual, its place in the scene, its overlays and the
data, shader program and a first unseen draw of each of its parts follow as the
next tasks, each 10-90 ms where napari's whole add took 150-300 ms, the canvas
held from the insertion to the last of them; its controls are made when first
needed. One exception to the queue: a lone result of the selected blend, with
nothing else waiting, re-fills the existing detail layers (and the mosaics) in
the turn it arrives, so that one repaint shows it with the rest of what it
changed in the window.
Under software OpenGL every repaint composes the whole window (60-140 ms
here), and it holds the GIL against the workers meanwhile.

Re-filling an existing layer is much cheaper than adding one; how a re-fill
refreshes each layer once is in :mod:`._layer_refill`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from qtpy.QtCore import QCoreApplication, QEvent, QTimer

from ..layers import deblend_result_layers, mosaic_layer_name
from ..mosaic import ResultMosaic
from ._layer_parts import LayerParts
from ._layer_refill import (
    added_inactive,
    new_layer,
    refill,
    refill_layers,
    set_points,
    viewer_extent_held,
)

FRAME_MS = 16  # pause between a canvas repaint and the next layer task (one 60 Hz frame)
WINDOW_PAINT_S = 0.003  # a window paint at least this long gets a turn of its own before the canvas repaint


class ResultLayers:
    """Mosaic and detail layers of one viewer's deblending results (see the module docstring)."""

    def __init__(self, viewer: Any, session: Any) -> None:
        self.viewer = viewer
        self.session = session
        self.mosaics: dict[str, ResultMosaic] = {}
        self.mosaic_layers: dict[str, dict[str, Any]] = {}
        self.detail_layers: dict[tuple[int, str], list[Any]] = {}  # kept earlier runs
        self.slots: dict[str, dict[str, Any]] = {}  # model -> part -> layer showing the latest result
        self.detail_blend = 0
        self._generation: dict[tuple[int, str], int] = {}
        self._pending: list[tuple[str, Any]] = []
        self._tasks: deque[Callable[[], None]] = deque()
        self._timer = QTimer()
        self._timer.setInterval(0)
        self._timer.timeout.connect(self._run_one)
        self.holding = False
        self._held_details: set[tuple[int, str]] = set()  # (blend, model) of the selection, shown when a run ends
        self._painted_held: set[str] = set()  # models whose mosaics got results while held, not yet shown
        self._frozen_canvas: Any = None  # the canvas widget while its repaint is held (see _freeze_canvas)
        self._window_painted_for_hold = False  # the rest of the window painted before the held canvas repaints
        self._idle_callbacks: list[Callable[[], None]] = []
        self._parts = LayerParts(viewer)
        self.closed = False

    # ---- queue ------------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """True while results or layer changes are waiting to be shown (or the canvas to repaint them)."""
        return bool(self._tasks or self._pending or self._frozen_canvas is not None)

    def _queue(self, task: Callable[[], None]) -> None:
        if self.closed:
            return
        self._tasks.append(task)
        if not self._timer.isActive():
            self._timer.start()

    def _viewer_gone(self) -> bool:
        """True once the viewer is closed (napari forgets closed viewers and drops their Qt window)."""
        instances = getattr(type(self.viewer), "_instances", None)
        window = getattr(self.viewer, "window", None)
        return (instances is not None and self.viewer not in instances) or (
            window is not None and not hasattr(window, "_qt_window"))

    def _run_one(self) -> None:
        continues_hold = bool(self._tasks) and getattr(self._tasks[0], "continues_hold", False)
        if not continues_hold and self._frozen_canvas is not None:
            if not self._window_painted_for_hold:
                self._window_painted_for_hold = True  # once a hold: a widget always repainting must not keep it
                if self._window_painted():
                    self._timer.start(0)  # the canvas repaints in a turn of its own after this one
                    return
            self._thaw_canvas()
            # the canvas repaints for the previous task after this turn; the next task waits a frame,
            # so that input and timers come due during the repaint run before it
            self._timer.start(FRAME_MS)
            return
        if self._tasks and not self.closed and self._viewer_gone():
            self.close()  # a layer added now would find half of the viewer's Qt side gone
        if not self._tasks or self.closed:
            self._timer.stop()
            self._call_idle()
            return
        task = self._tasks.popleft()
        if getattr(task, "holds_canvas", True):
            self._freeze_canvas()
        try:
            task()
        except RuntimeError:  # Qt objects deleted: the viewer is closing
            self.close()
            return
        self._timer.start(0)  # due from now: what waited during the task runs before the repaint turn

    def when_idle(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once nothing waits to be shown (now, if nothing does)."""
        self._idle_callbacks.append(callback)
        if not self.busy:
            self._call_idle()

    def _call_idle(self) -> None:
        callbacks, self._idle_callbacks = self._idle_callbacks, []
        for callback in callbacks:
            callback()

    def _canvas_widget(self) -> Any:
        qt_viewer = getattr(getattr(self.viewer, "window", None), "_qt_viewer", None)
        canvas = getattr(qt_viewer, "canvas", None)
        return getattr(canvas, "native", None)

    def _freeze_canvas(self) -> None:
        """Hold the canvas's repaint back while a task changes layers (it follows in a turn of its own).

        Under software OpenGL a canvas repaint composes the whole window (60-140 ms);
        done in the task's turn it would add to the task's own time in one stall.
        (Holding the layer list's repaint too, so that one repaint shows a new layer's
        row and pixels, measured worse: that repaint took longer.)
        """
        widget = self._canvas_widget()
        try:
            if widget is not None and widget.updatesEnabled():
                widget.setUpdatesEnabled(False)
                self._frozen_canvas = widget
                self._window_painted_for_hold = False
        except RuntimeError:  # already deleted
            pass

    def _window_painted(self) -> bool:
        """Paint what waits to be painted in the window but the held canvas (the layer controls or
        list rows a task changed, say); True if that took a while.

        Qt would otherwise paint them in the canvas's repaint: one stall of both.
        """
        start = time.perf_counter()
        QCoreApplication.sendPostedEvents(None, QEvent.Type.UpdateRequest)
        return time.perf_counter() - start > WINDOW_PAINT_S

    def _thaw_canvas(self) -> bool:
        """Let a held canvas repaint (once, for everything the task changed); True if it was held."""
        widget, self._frozen_canvas = self._frozen_canvas, None
        if widget is None:
            return False
        try:
            widget.setUpdatesEnabled(True)
        except RuntimeError:  # already deleted
            pass
        return True

    def close(self) -> None:
        """Stop showing anything (the viewer or panel is going away)."""
        self.closed = True
        self._tasks.clear()
        self._pending.clear()
        self._timer.stop()
        try:  # layers added in parts get their visual and controls now, unless the viewer is gone
            self._parts.close(finish=not self._viewer_gone())
        except RuntimeError:  # Qt objects deleted: the viewer is closing
            pass
        self._thaw_canvas()
        self._call_idle()

    def drain(self) -> None:
        """Run every waiting task now (scripts and tests; the panel lets the timer do it)."""
        self.hold_mosaics(False)  # queues the held results and the flush
        while self._tasks and not self.closed:
            self._run_one()
        self._thaw_canvas()
        if not self.busy:
            self._call_idle()

    # ---- results ----------------------------------------------------------------------------------
    def add(self, model: str, result: Any) -> None:
        """Show a new result: paint it into its model's mosaic soon; detail layers if its blend is selected."""
        selected = result.blend_id == self.session.selected_blend
        if self.holding:
            # painted into the mosaic's arrays now (~0.2 ms), shown when the run ends: no pile of work then
            self._paint_into_mosaic(model, result)
            self._painted_held.add(model)
            if selected:
                self._held_details.add((result.blend_id, model))
            return
        self._pending.append((model, result))
        if selected and not self._tasks and not self.closed:
            # nothing else waits: re-fill the details now, and paint the mosaics in the same turn, so that
            # one paint shows them with whatever else this result changed in the window
            self._replace_details(result.blend_id, model, then_flush=True, refill_now=True)
        elif selected:
            self._queue(lambda: self._replace_details(result.blend_id, model, then_flush=True))
        else:
            self._queue_flush()

    def _queue_flush(self) -> None:
        """Paint the waiting results into the mosaics in a coming turn (once, however many wait)."""
        if self._flush not in self._tasks:
            self._queue(self._flush)

    def hold_mosaics(self, hold: bool) -> None:
        """Hold back painting results into the mosaics (a run of many blends), or paint what waits now.

        Each refresh repaints the canvas, 60-140 ms of UI thread under software
        OpenGL, and re-filling the selected blend's detail layers takes 25-40 ms:
        while a run goes, the UI thread only moves the progress bar and paints
        each result into its mosaic's arrays; the mosaics and the selected blend's
        details are shown at its end.
        """
        self.holding = hold
        if hold:
            return
        for blend_id, model in sorted(self._held_details):
            self._queue(lambda b=blend_id, m=model: self._replace_details(b, m))
        self._held_details.clear()
        painted, self._painted_held = self._painted_held, set()
        for model in sorted(painted):
            self._queue(lambda m=model: self._show_mosaic(m))
        if self._pending:
            self._queue_flush()

    def _source(self) -> Any:
        detections = self.session.detections
        return detections.source_layer if detections is not None else None

    def _placement(self, translate: Any = (0.0, 0.0)) -> dict[str, Any]:
        """Scale and translate putting field pixel coordinates where the field layer shows them."""
        source = self._source()
        translate = np.asarray(translate, float)
        if source is None:
            return {"translate": tuple(translate)}
        scale = np.asarray(source.scale[-2:], float)
        return {"scale": tuple(scale), "translate": tuple(translate * scale + np.asarray(source.translate[-2:], float))}

    def _flush(self, refresh_now: bool = False) -> None:
        """Paint waiting results into their mosaics and refresh those layers (one refresh per layer).

        The refresh of existing mosaic layers is a task of its own, unless ``refresh_now``
        (it then joins the current task and its canvas repaint).
        """
        pending, self._pending = self._pending, []
        detections = self.session.detections
        if not pending or detections is None:
            return
        changed = {model for model, result in pending if self._paint_into_mosaic(model, result)}
        for model in sorted(changed):
            self._show_mosaic(model, refresh_now=refresh_now)

    def _paint_into_mosaic(self, model: str, result: Any) -> bool:
        """Paint a result into its model's mosaic arrays (not yet shown); False without detections."""
        detections = self.session.detections
        if detections is None:
            return False
        shape = tuple(detections.field.shape)
        mosaic = self.mosaics.get(model)
        if mosaic is None or mosaic.shape != shape:
            mosaic = self.mosaics[model] = ResultMosaic(shape, model)
        mosaic.add(result)
        return True

    def _show_mosaic(self, model: str, refresh_now: bool = False) -> None:
        """Show a model's mosaic: make its layers (one per task), or refresh them (one task, or now)."""
        if model not in self.mosaics:
            return
        if model not in self.mosaic_layers or any(
            layer not in self.viewer.layers for layer in self.mosaic_layers[model].values()
        ):
            for part in ("model image", "residual", "masks", "positions"):
                self._queue(_adds_layers(lambda m=model, p=part: self._make_mosaic_layer(m, p)))
        elif refresh_now:
            self._refresh_mosaic_layers(model)
        else:  # one task: one repaint of the canvas for the four layers
            self._queue(lambda m=model: self._refresh_mosaic_layers(m))

    def _make_mosaic_layer(self, model: str, part: str) -> None:
        mosaic = self.mosaics[model]
        layers = self.mosaic_layers.setdefault(model, {})
        old = layers.get(part)
        if old is not None and old in self.viewer.layers:
            self._freeze_canvas()
            self._refresh_mosaic_layer(model, part)
            return
        name = mosaic_layer_name(model, part)
        placement = self._placement()
        noise = float(np.nanmax(self.session.detections.field.noise)) if self.session.detections else 1.0

        def added(layer: Any) -> None:
            layer.metadata["napari_deblend_mosaic"] = {"model": model, "part": part}
            layers[part] = layer
            self._keep_source_active()

        self._add_layer(lambda: self._mosaic_layer(mosaic, part, name, placement, noise), added,
                        still_wanted=lambda: self.mosaics.get(model) is mosaic and part not in layers)

    def _mosaic_layer(self, mosaic: ResultMosaic, part: str, name: str, placement: dict[str, Any],
                      noise: float) -> Any:
        """A new napari layer (not yet in the viewer) showing one part of a mosaic."""
        if part == "model image":
            source = self._source()
            limits = tuple(source.contrast_limits) if source is not None else (0.0, 10 * noise)
            return new_layer("image", mosaic.model_image, dict(name=name, colormap="magma", blending="additive",
                                                                contrast_limits=limits, visible=False, **placement))
        if part == "residual":
            limit = 5.0 * noise
            return new_layer("image", mosaic.residual, dict(name=name, colormap="RdBu_r",
                                                             contrast_limits=(-limit, limit), visible=False, **placement))
        if part == "masks":
            return new_layer("labels", mosaic.masks, dict(name=name, opacity=0.35, visible=False, **placement))
        data, features = mosaic.positions()
        return new_layer("points", data, dict(name=name, features=pd.DataFrame(features), symbol="x", size=3,
                                               face_color="white", border_width=0, **placement))

    def _refresh_mosaic_layers(self, model: str) -> None:
        """Show the mosaic's new pixels and positions (hidden image layers refresh when shown)."""
        for part in ("model image", "residual", "masks", "positions"):
            self._refresh_mosaic_layer(model, part)

    def _refresh_mosaic_layer(self, model: str, part: str) -> None:
        layer = self.mosaic_layers.get(model, {}).get(part)
        if layer is None or layer not in self.viewer.layers:
            return
        if part == "positions":
            data, features = self.mosaics[model].positions()
            with viewer_extent_held(self.viewer, [layer]):
                set_points(layer, data, pd.DataFrame(features))
        elif layer.visible:  # napari refreshes a hidden layer when it is shown again
            layer.refresh()

    # ---- detail layers ----------------------------------------------------------------------------
    # Removing a napari layer costs a full garbage collection (~0.4 s here), so the latest result of
    # each model reuses one set of layers ("slots": component 1..K, residual, masks, positions),
    # re-filled and renamed when the selection moves; only kept earlier runs get layers of their own.

    def select(self, blend_id: int) -> None:
        """The selection changed: the detail layers show this blend's results (hidden if it has none)."""
        if blend_id == self.detail_blend:
            return
        self.detail_blend = blend_id
        for key in [k for k in self.detail_layers if k[0] != blend_id]:
            self._queue(lambda k=key: self._remove_details(k))
        # models without a result for this blend keep showing their last blend (named so) until one comes
        for model in sorted({model for (b, model) in self.session.results if b == blend_id}):
            self._queue(lambda m=model: self._replace_details(blend_id, m))

    def _remove_details(self, key: tuple[int, str]) -> None:
        for layer in self.detail_layers.pop(key, []):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def _hide_slots(self, model: str, keep: int) -> None:
        """Hide (and mark unused) the component slots of ``model`` beyond the first ``keep``."""
        for part, layer in self.slots.get(model, {}).items():
            if part.startswith("component ") and int(part.split()[1]) > keep and layer in self.viewer.layers:
                if layer.visible:
                    layer.visible = False
                layer.name = f"{model} · {part} (unused)"

    def _replace_details(self, blend_id: int, model: str, then_flush: bool = False, refill_now: bool = False) -> None:
        """Detail layers of (blend, model): the latest result in the slots, kept earlier runs beside them.

        With ``then_flush``, the waiting results are painted into the mosaics after the
        details, in the same task as their re-fill when there is one. With ``refill_now``,
        that task runs at once instead of in a coming turn (layers to add still wait their turn).
        """
        if blend_id != self.session.selected_blend:
            if then_flush:
                self._queue_flush()
            return
        key = (blend_id, model)
        self._remove_details(key)
        self.detail_blend = blend_id
        generation = self._generation[key] = self._generation.get(key, 0) + 1
        results = [*self.session.kept.get(key, []), self.session.results.get(key)]
        results = [r for r in results if r is not None]
        for run, result in enumerate(results):
            latest = run == len(results) - 1
            suffix = f" (run {run + 1})" if len(results) > 1 else ""
            refills = []
            for index, (data, kwargs, kind) in enumerate(deblend_result_layers(result, model)):
                kwargs.update(self._placement(kwargs.get("translate", (0.0, 0.0))))
                part = kwargs["name"].rsplit(" · ", 1)[-1]
                kwargs["name"] = kwargs["name"] + suffix
                if index == 0 and result.info.get("padded"):
                    kwargs["name"] += " (edge, padded)"
                slot = (model, part) if latest else None
                layer = self.slots.get(model, {}).get(part) if latest else None
                if layer is not None and layer in self.viewer.layers and layer._type_string == kind:
                    refills.append((layer, data, kwargs))
                else:  # a new layer: one per task
                    self._queue(_adds_layers(
                        lambda d=data, kw=kwargs, k=kind, sl=slot: self._put_detail(key, generation, d, kw, k, sl)))
            # existing layers: all in one task with the hiding of unused slots, so the canvas repaints once
            keep = max(result.n_components, 1) if latest else None
            flush_too = then_flush and latest and self._flush not in self._tasks
            if refills and flush_too:
                def refill_and_flush(r=refills, k=keep) -> None:
                    self._refill_all(key, generation, r, hide_beyond=k)
                    self._flush(refresh_now=True)

                if refill_now and not self._tasks:
                    refill_and_flush()
                else:
                    self._queue(refill_and_flush)
                then_flush = False
            elif refills:
                self._queue(lambda r=refills, k=keep: self._refill_all(key, generation, r, hide_beyond=k))
            elif latest:
                self._queue(lambda k=keep: self._hide_slots(model, keep=k))
        if then_flush:
            self._queue_flush()

    def _refill_all(self, key: tuple[int, str], generation: int, refills: list[tuple[Any, Any, dict]],
                    hide_beyond: int | None = None) -> None:
        if key[0] != self.session.selected_blend or self._generation.get(key) != generation:
            return
        refill_layers(self.viewer, [(layer, data, kwargs) for layer, data, kwargs in refills
                                    if layer in self.viewer.layers])
        if hide_beyond is not None:
            self._hide_slots(key[1], keep=hide_beyond)
        self._keep_source_active()

    def _put_detail(self, key: tuple[int, str], generation: int, data: Any, kwargs: dict[str, Any], kind: str,
                    slot: tuple[str, str] | None) -> None:
        """Show one detail layer (one queue task), re-filling its slot's layer when there is one."""
        if key[0] != self.session.selected_blend or self._generation.get(key) != generation:
            return
        layer = self.slots.get(slot[0], {}).get(slot[1]) if slot else None
        if layer is not None and layer in self.viewer.layers and layer._type_string == kind:
            self._freeze_canvas()
            refill(layer, data, kwargs)
            self._keep_source_active()
            return

        def added(layer: Any) -> None:
            if slot:
                self.slots.setdefault(slot[0], {})[slot[1]] = layer
            else:
                self.detail_layers.setdefault(key, []).append(layer)
            self._keep_source_active()

        self._add_layer(lambda: new_layer(kind, data, kwargs), added,
                        still_wanted=lambda: key[0] == self.session.selected_blend
                        and self._generation.get(key) == generation)

    def _add_layer(self, make: Callable[[], Any], added: Callable[[Any], None],
                   still_wanted: Callable[[], bool]) -> None:
        """Add the layer that ``make`` makes, inactive, in parts: one task makes it, the next adds it to the viewer
        (if ``still_wanted()``) and calls ``added(layer)``, the next ones make its view (see :class:`LayerParts`).

        With a napari that cannot add a layer in parts, it is made and added at once, with the canvas held.
        """
        layer = make()
        if not self._parts.supported:
            self._freeze_canvas()
            with added_inactive(self.viewer):
                self.viewer.add_layer(layer)
            added(layer)
            return

        def insert() -> None:
            if not still_wanted():
                return
            self._freeze_canvas()  # until the layer's last step: one canvas repaint draws it, everything built
            with added_inactive(self.viewer), self._parts.views_held() as inserted:
                self.viewer.add_layer(layer)
            added(layer)
            for each in reversed(inserted):
                self._queue_layer_step(each)

        self._tasks.appendleft(_adds_layers(insert))

    def _queue_layer_step(self, layer: Any) -> None:
        """Queue the layer's next step (see :class:`LayerParts`) first in line, if one is due.

        The steps run with the canvas held since the layer's insertion, so that the canvas
        repaint after the last one draws the layer at once, its shaders built.
        """
        if not self._parts.next_step_due(layer):
            return

        def step() -> None:
            self._parts.next_step(layer)
            self._queue_layer_step(layer)

        self._tasks.appendleft(_step(step, holds_canvas=True, continues_hold=True))

    def _keep_source_active(self) -> None:
        source = self._source()
        if source is not None and source in self.viewer.layers and self.viewer.layers.selection.active is not source:
            self.viewer.layers.selection.active = source

    def forget(self) -> None:
        """New detections: results of the old ones are gone, and so are their layers."""
        self._pending.clear()
        self._held_details.clear()
        self._painted_held.clear()
        self.mosaics.clear()
        for layers in self.mosaic_layers.values():
            for layer in layers.values():
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        self.mosaic_layers.clear()
        for key in list(self.detail_layers):
            self._remove_details(key)
        for model in list(self.slots):
            for layer in self.slots.pop(model).values():
                if layer in self.viewer.layers:
                    self.viewer.layers.remove(layer)
        self.detail_blend = 0


def _step(task: Callable[[], None], holds_canvas: bool, continues_hold: bool = False) -> Callable[[], None]:
    """Mark a queue task as changing what the canvas draws (its repaint is held) or not.

    With ``continues_hold``, the task runs before the held canvas repaints (it prepares what that repaint draws).
    """
    task.holds_canvas = holds_canvas  # type: ignore[attr-defined]
    task.continues_hold = continues_hold  # type: ignore[attr-defined]
    return task


def _adds_layers(task: Callable[[], None]) -> Callable[[], None]:
    """A task that adds layers: it holds the canvas itself if it needs to (see ``ResultLayers._add_layer``)."""
    return _step(task, holds_canvas=False)
