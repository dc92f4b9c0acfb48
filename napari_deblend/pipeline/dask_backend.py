"""Where a run's tasks execute: in this process, or on a Dask distributed cluster.

Both backends offer one operation, :meth:`map_unordered`: run a function on
each item and yield ``(item, result, error)`` as tasks finish, so that one
failing field never stops the others.  On Dask:

- tasks that raise are retried ``retries`` times; tasks on a worker that dies
  are rescheduled on another worker by the scheduler (up to
  ``distributed.scheduler.allowed-failures`` deaths);
- each worker process loads a model once (``get_deblender`` caches per
  process) and batches a tile's stamps on its device;
- input files and the output directory must be on a filesystem every worker
  sees (tiles read the field's scratch arrays and write their records there).
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..errors import DeblendInputError


class LocalBackend:
    """Run every task in this process, one after the other."""

    name = "local"
    workers = 1

    def map_unordered(self, function: Callable[[Any], Any], items: Iterable[Any], name: str = "task"
                      ) -> Iterator[tuple[Any, Any, BaseException | None]]:  # fmt: skip
        """Yield ``(item, function(item), None)``, or ``(item, None, error)`` if it raised an Exception."""
        for item in items:
            try:
                result = function(item)
            except Exception as exc:  # reported per field; KeyboardInterrupt still stops the run
                yield item, None, exc
            else:
                yield item, result, None

    def close(self) -> None:
        """Nothing to release."""


class DaskBackend:
    """Run tasks on a Dask distributed cluster.

    Parameters
    ----------
    client : distributed.Client
        A connected client.
    retries : int
        Times a task that raised is retried.
    own_cluster : object, optional
        A cluster this backend started (closed with it).
    """

    name = "dask"

    def __init__(
        self, client: Any, retries: int = 2, own_cluster: Any = None, own_client: bool = False
    ) -> None:
        self.client = client
        self.retries = retries
        self._cluster = own_cluster
        self._own_client = own_client
        self._counter = itertools.count()

    @property
    def workers(self) -> int:
        """Number of workers connected now."""
        return len(self.client.scheduler_info(n_workers=-1).get("workers", {}))

    def map_unordered(self, function: Callable[[Any], Any], items: Iterable[Any], name: str = "task"
                      ) -> Iterator[tuple[Any, Any, BaseException | None]]:  # fmt: skip
        """Submit one task per item; yield ``(item, result, error)`` as they finish."""
        from distributed import as_completed

        batch = next(self._counter)
        items = list(items)
        futures = {
            self.client.submit(
                function, item, key=f"napari-deblend-{name}-{batch}-{i}", pure=False, retries=self.retries
            ): item  # fmt: skip
            for i, item in enumerate(items)
        }
        for future in as_completed(futures):
            item = futures[future]
            try:
                result = future.result()
            except Exception as exc:
                yield item, None, exc
            else:
                yield item, result, None
            future.release()

    def close(self) -> None:
        """Close the client and the cluster this backend started (not a cluster it was given)."""
        if self._own_client:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


def make_backend(
    scheduler: Any = None, dask_cluster: str | None = None, retries: int = 2
) -> LocalBackend | DaskBackend:
    """The backend for ``--scheduler`` / ``--dask-cluster`` (neither: this process).

    Parameters
    ----------
    scheduler : str or distributed.Client, optional
        Address of a running scheduler (``tcp://host:8786``), or a connected client.
    dask_cluster : str, optional
        ``"local:N"``: start a ``distributed.LocalCluster`` of N single-threaded worker processes.
    retries : int
        Retries of a task that raised.

    Raises
    ------
    DeblendInputError
        Both options, a malformed ``--dask-cluster``, an unreachable scheduler,
        or ``distributed`` not installed.
    """
    check_backend_options(scheduler, dask_cluster, retries)
    if scheduler is None and dask_cluster is None:
        return LocalBackend()
    from distributed import Client, LocalCluster

    if scheduler is not None:
        if isinstance(scheduler, Client):
            return DaskBackend(scheduler, retries=retries)
        _check_reachable(str(scheduler))
        try:
            client = Client(str(scheduler), timeout="20s")
        except Exception as exc:  # OSError (timeout), ValueError (address), CommClosedError, ...
            raise DeblendInputError(f"--scheduler {scheduler}: cannot connect ({type(exc).__name__}: "
                                    f"{' '.join(str(exc).split())[:160]}): expected a running Dask scheduler") from None
        return DaskBackend(client, retries=retries, own_client=True)
    count = int(str(dask_cluster).partition(":")[2])
    cluster = LocalCluster(n_workers=count, threads_per_worker=1, processes=True, dashboard_address=None)
    return DaskBackend(Client(cluster), retries=retries, own_cluster=cluster, own_client=True)


#: Address schemes of Dask's communication layer.
SCHEDULER_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")


def max_local_workers() -> int:
    """Most worker processes ``--dask-cluster local:N`` may start: four per CPU, at least 8."""
    return max(8, 4 * (os.cpu_count() or 1))


def check_backend_options(scheduler: Any = None, dask_cluster: str | None = None, retries: int = 2) -> None:
    """Check ``--scheduler``, ``--dask-cluster`` and ``--retries`` without connecting or starting anything.

    Raises
    ------
    DeblendInputError
        Both options, a malformed address or ``local:N``, too many local workers, negative retries,
        or ``distributed`` not installed.
    """
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise DeblendInputError(f"--retries {retries}: expected a whole number of retries >= 0")
    if scheduler is not None and dask_cluster is not None:
        raise DeblendInputError("--scheduler and --dask-cluster: expected one of them, not both")
    if scheduler is None and dask_cluster is None:
        return
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise DeblendInputError("Dask distributed is not installed: `pip install distributed`") from None
    if dask_cluster is not None:
        kind, _, count = str(dask_cluster).partition(":")
        if kind != "local" or not count.isdigit() or not 1 <= int(count) <= max_local_workers():
            raise DeblendInputError(f"--dask-cluster {dask_cluster!r}: expected local:N with N from 1 to "
                                    f"{max_local_workers()} worker processes")
    elif isinstance(scheduler, str):
        _scheduler_host_port(scheduler)


def _scheduler_host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a TCP-like scheduler address (None for other schemes); a sentence if it is malformed."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    expected = "expected an address like tcp://host:8786"
    try:
        scheme, location = parse_address(address)
        if scheme not in SCHEDULER_SCHEMES:
            raise ValueError(f"unknown scheme {scheme!r}")
        if scheme in ("inproc", "ucx"):
            return None
        host, port = parse_host_port(location)
    except (ValueError, TypeError) as exc:
        raise DeblendInputError(f"--scheduler {address!r}: {exc}: {expected}") from None
    if not host or not 1 <= int(port) <= 65535:
        raise DeblendInputError(f"--scheduler {address!r}: no host, or port {port} out of 1-65535: {expected}")
    return host, int(port)


def _check_reachable(address: str, timeout: float = 20.0) -> None:
    """Refuse a scheduler address where nothing answers, before a Dask client is made (a failed one warns at exit)."""
    where = _scheduler_host_port(address)
    if where is None:
        return
    try:
        socket.create_connection(where, timeout=timeout).close()
    except OSError as exc:
        raise DeblendInputError(f"--scheduler {address}: nothing answers at {where[0]}:{where[1]} "
                                f"({exc.strerror or exc}): expected a running Dask scheduler") from None
