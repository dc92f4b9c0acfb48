"""Add napari layers in parts, so that no part holds the UI thread for long.

napari adds a layer in one go: the layer joins the layer list, then the Qt viewer
makes its vispy visual and puts it in the scene (drawing the scene's state
anew), and the layer-controls container makes its controls widget. Under
software OpenGL with a field, its detections and a few result layers open, that
is 150-300 ms of UI thread for one layer, and the controls' widget makes the
window lay out and repaint (another ~100 ms).

:class:`LayerParts` lets the layer join the list alone (20-50 ms) and hands
back the rest as steps, each well under 100 ms, for the caller to run in turns
of the event loop of their own: make the visual; put it in the scene; make its
overlays (a Labels layer's editing overlays take ~50 ms); update the scene;
for each of its parts, prepare its data and build its shader program before
its first draw (a Points layer's parts add 100-200 ms of Python to the repaint
that draws it first: glyphs, shader parsing). The controls are made when
napari first looks them up (the layer is selected, say), as napari does with
its "dynamic layer controls" setting, or on :meth:`finish`. A layer removed
before its steps have run is finished first. The caller holds the canvas's
repaint from the insertion to the last step, so that one repaint draws the
layer, everything built.
With a napari that lacks the parts used here, layers are added in one go.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple


class Step(NamedTuple):
    """One part of adding a layer: what to run, and whether it waits until needed instead of a turn of its own."""

    run: Callable[[], None]
    on_demand: bool = False


def _qt_parts(viewer: Any) -> tuple[Any, Any, Any] | None:
    """The Qt viewer, its layer-controls container and napari's vispy-layer factory; None if missing."""
    try:
        from napari._vispy.utils.visual import create_vispy_layer
    except ImportError:  # another napari
        return None
    qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
    controls = getattr(qt_viewer, "controls", None)
    needed = (
        hasattr(qt_viewer, "_on_add_layer_change") and getattr(qt_viewer, "_qt_poll", None) is None
        and hasattr(getattr(qt_viewer, "canvas", None), "add_layer_visual_mapping")
        and hasattr(controls, "_add") and hasattr(getattr(viewer, "layers", None), "events")
    )
    return (qt_viewer, controls, create_vispy_layer) if needed else None


def _draw_steps(visual: Any, scene_canvas: Callable[[], Any]) -> list[Step]:
    """Steps doing what a vispy visual's first draw does before it draws, so that draw finds it done.

    Three steps: its transforms and data (a text's glyphs); its shader program;
    then a draw of it alone that changes no pixel (the GL scissor box is empty),
    so that the OpenGL driver compiles its shaders and takes its textures and
    vertices now. Under software OpenGL that is 15-50 ms per part, which the
    canvas repaint that shows the layer would otherwise add to its own 60-140 ms.
    Each is only a head start: the draw does whatever is not done here.
    """
    will_draw: list[bool] = []

    def prepare() -> None:
        try:
            visual._prepare_transforms(visual)
            will_draw.append(visual._prepare_draw(visual) is not False)
        except Exception:  # noqa: BLE001 - a head start only (see above)
            return

    def build() -> None:
        if will_draw and will_draw[0]:
            try:
                visual._program.build_if_needed()
            except Exception:  # noqa: BLE001 - a head start only (see above)
                return

    def draw_unseen() -> None:
        if not (will_draw and will_draw[0]):
            return
        try:
            canvas = scene_canvas()
            if not canvas.native.isValid():  # no OpenGL context yet (a viewer never shown)
                return
            canvas.set_current()
            context = canvas.context
            context.set_scissor(0, 0, 0, 0)
            context.set_state(scissor_test=True)
            try:
                visual.draw()
            finally:
                context.set_state(scissor_test=False)
                context.finish()  # the GL commands run now (compile, upload), not in the next repaint
        except Exception:  # noqa: BLE001 - a head start only (see above)
            return

    return [Step(prepare), Step(build), Step(draw_unseen)]


def drawn_parts(visual: Any) -> list[Any]:
    """The visible visuals with a shader program of their own that draw ``visual`` (itself, or its parts').

    A compound visual (a Points layer's) draws its parts, and a part may be compound
    too (a line is a line and its markers).
    """
    if not visual.visible:
        return []
    parts = getattr(visual, "_subvisuals", None)
    if not parts:
        return [visual]
    return [leaf for part in parts for leaf in drawn_parts(part)]


def _scene_update_can_wait(canvas: Any) -> bool:
    """True if napari's canvas lets putting a visual in the scene and updating the scene be separate steps."""
    return (getattr(canvas, "_pause_scene_graph", None) is False
            and callable(getattr(canvas, "_update_layer_overlays", None))
            and callable(getattr(canvas, "_update_scenegraph", None)))


class _ControlsOnDemand(dict):
    """napari's layer -> controls-widget dict that makes a waiting layer's controls when first looked up."""

    def __init__(self, entries: dict[Any, Any]) -> None:
        super().__init__(entries)
        self.owners: list[weakref.ref] = []  # the LayerParts whose layers may wait

    def __missing__(self, layer: Any) -> Any:
        for ref in self.owners:
            owner = ref()
            if owner is not None and layer in owner._unfinished:
                owner.finish(layer)
                return dict.__getitem__(self, layer)
        raise KeyError(layer)


def _controls_on_demand(controls: Any) -> _ControlsOnDemand:
    """The container's controls dict, made one that makes waiting layers' controls on demand."""
    if not isinstance(controls.widgets, _ControlsOnDemand):
        controls.widgets = _ControlsOnDemand(controls.widgets)
    return controls.widgets


class LayerParts:
    """Adds layers to one viewer with their visual and controls made in later steps.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer to add layers to.
    """

    def __init__(self, viewer: Any) -> None:
        self.viewer = viewer
        parts = _qt_parts(viewer)  # looked up when needed, never kept: a kept Qt viewer would outlive its viewer
        self._supported = parts is not None
        self._unfinished: dict[Any, list[Step]] = {}
        if parts is not None:
            viewer.layers.events.removing.connect(self._on_removing)
            _controls_on_demand(parts[1]).owners.append(weakref.ref(self))

    @property
    def supported(self) -> bool:
        """True if this napari lets a layer's view be made in steps."""
        return self._supported

    @property
    def unfinished(self) -> list[Any]:
        """Layers whose visual or controls are not made yet."""
        return list(self._unfinished)

    @contextmanager
    def views_held(self) -> Iterator[list[Any]]:
        """Layers added inside the block join the layer list only; yields the list they are put in.

        Each one then waits for its steps (:meth:`next_step`) and for its
        controls to be needed (its selection or removal, or :meth:`finish`).
        """
        added: list[Any] = []
        parts = _qt_parts(self.viewer) if self._supported else None
        if parts is None:
            yield added
            return
        qt_viewer, controls, _ = parts
        inserted = self.viewer.layers.events.inserted

        def record(event: Any) -> None:  # at once: a layer made active as it is inserted gets its controls
            added.append(event.value)
            self._unfinished[event.value] = self._steps(event.value)

        inserted.connect(record)
        try:
            with inserted.blocker(qt_viewer._on_add_layer_change), inserted.blocker(controls._add):
                yield added
        finally:
            inserted.disconnect(record)

    def _steps(self, layer: Any) -> list[Step]:
        made: dict[str, Any] = {}

        def parts() -> tuple[Any, Any, Any]:
            found = _qt_parts(self.viewer)
            if found is None:
                raise RuntimeError("the viewer's Qt side is gone")
            return found

        def make_visual() -> None:
            qt_viewer, _, create_vispy_layer = parts()
            made["visual"] = create_vispy_layer(layer, font_info=qt_viewer.canvas.font_info())

        def show_visual() -> None:
            visual = made.pop("visual")
            canvas = parts()[0].canvas
            scene_steps = []
            if _scene_update_can_wait(canvas):
                # napari would also make the layer's overlays and update the whole scene now: two steps more
                canvas._pause_scene_graph = True
                try:
                    canvas.add_layer_visual_mapping(layer, visual)
                finally:
                    canvas._pause_scene_graph = False
                scene_steps = [Step(lambda: parts()[0].canvas._update_layer_overlays(layer)),
                               Step(lambda: parts()[0].canvas._update_scenegraph())]
            else:
                canvas.add_layer_visual_mapping(layer, visual)
            pieces = drawn_parts(visual.node)
            # next in line (before the controls); the scene first: it puts the layer's node in it
            self._unfinished[layer][0:0] = scene_steps + [
                step for piece in pieces for step in _draw_steps(piece, lambda: parts()[0].canvas._scene_canvas)]

        def make_controls() -> None:
            from napari.utils.events import Event

            parts()[1]._add(Event("inserted", value=layer))

        return [Step(make_visual), Step(show_visual), Step(make_controls, on_demand=True)]

    def next_step_due(self, layer: Any) -> bool:
        """True if the layer has a step to run in a turn (its controls wait until needed)."""
        steps = self._unfinished.get(layer)
        return bool(steps) and not steps[0].on_demand

    def next_step(self, layer: Any) -> None:
        """Run the layer's next step, unless none is due (its controls wait until needed)."""
        if self.next_step_due(layer):
            self._run_next(layer)

    def _run_next(self, layer: Any) -> None:
        steps = self._unfinished.get(layer)
        if not steps:
            return
        step = steps.pop(0)
        if not steps:
            del self._unfinished[layer]
        step.run()

    def finish(self, layer: Any | None = None) -> None:
        """Run the remaining steps of ``layer`` (of every layer if None) now."""
        for each in [layer] if layer is not None else list(self._unfinished):
            while each in self._unfinished:
                self._run_next(each)

    def close(self, finish: bool = True) -> None:
        """Stop following the viewer's layer list, finishing every layer first if ``finish``."""
        try:
            if finish:
                self.finish()
        finally:
            self._unfinished.clear()
            if self._supported:
                self._supported = False
                self.viewer.layers.events.removing.disconnect(self._on_removing)
                parts = _qt_parts(self.viewer)
                if parts is not None and isinstance(parts[1].widgets, _ControlsOnDemand):
                    owners = parts[1].widgets.owners
                    owners[:] = [ref for ref in owners if ref() not in (None, self)]

    def _on_removing(self, event: Any) -> None:
        index = getattr(event, "index", None)
        if self._unfinished and isinstance(index, int) and 0 <= index < len(self.viewer.layers):
            self.finish(self.viewer.layers[index])
