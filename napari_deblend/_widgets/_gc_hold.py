"""Keep the cyclic garbage collector off the objects that existed before a deblending run.

A napari session holds over half a million objects tracked by Python's cyclic
garbage collector. A full (generation-2) collection traverses them all: ~330 ms
of whichever thread triggers it, the UI thread included, and a run of many
blends makes enough objects to trigger one. While a run goes (and its results
are shown), :func:`hold_collector` moves the objects that existed before it
out of the collector's sight (:func:`gc.freeze`); full collections then take
~60-75 ms. When a run's worker is done, :func:`hold_new_objects` puts what the
run made out of sight too, so that a collection while its results are shown
(one came during a layer add, 60-130 ms) does not traverse them. When the last
run's results are shown they are all handed back (:func:`gc.unfreeze`),
so nothing is kept alive for good: garbage among them is collected later.
Objects someone else froze (``gc.get_freeze_count()`` not 0 at the first hold)
are left alone: no freeze, and no unfreeze that would undo theirs.
"""

from __future__ import annotations

import gc

_holders = 0
_froze = False  # whether the first hold froze (nothing was frozen before it)


def hold_collector() -> None:
    """Start a hold (nested holds count); the first one freezes the objects alive now."""
    global _holders, _froze
    if _holders == 0:
        _froze = gc.get_freeze_count() == 0
        if _froze:
            gc.freeze()
    _holders += 1


def hold_new_objects() -> None:
    """During a hold that froze, also freeze the objects made since it began (nothing otherwise)."""
    if _holders > 0 and _froze:
        gc.freeze()


def release_collector() -> None:
    """End a hold; the last one hands the objects it froze back to the collector."""
    global _holders
    if _holders == 0:
        return
    _holders -= 1
    if _holders == 0 and _froze:
        gc.unfreeze()
