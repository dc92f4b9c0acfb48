"""``run_fields`` on a Dask ``LocalCluster``: the same results as one process, even when a worker dies mid-run."""

from __future__ import annotations

import os

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from napari_deblend.field import write_field
from napari_deblend.pipeline import RunSettings, run_fields
from napari_deblend.pipeline.progress import RunProgress
from napari_deblend.simulate import simulate_field

distributed = pytest.importorskip("distributed")


class KillWorkerAfterFirstTile(RunProgress):
    """Progress that kills one worker process (its nanny restarts it) when the first tile is reported."""

    def __init__(self, client) -> None:
        super().__init__(enabled=False)
        self.client = client
        self.killed = None

    def tile_done(self, field, tile, blends, resumed=False):
        super().tile_done(field, tile, blends, resumed)
        if self.killed is None:
            self.killed = sorted(self.client.scheduler_info()["workers"])[-1]
            try:
                self.client.run(os._exit, 1, workers=[self.killed], wait=False)
            except Exception:  # the connection to the dying worker may drop mid-call
                pass


def test_dask_cluster_gives_the_single_process_results_and_survives_a_dead_worker(tmp_path):
    field, _ = simulate_field(512, seed=1)
    paths = [write_field(field, tmp_path / "field1.fits")]
    settings = RunSettings(model="peeling", device="cpu", tile_size=256, overlap=96)
    # Dask workers run torch on one thread: so does the reference run, for bit-identical sums
    # (with 2 threads torch adds in another order and positions differ at the 1e-7 pixel level)
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        local = run_fields(paths, tmp_path / "local", settings, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert local.exit_code == 0 and local.backend == "local"

    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    try:
        with distributed.Client(cluster) as client:
            progress = KillWorkerAfterFirstTile(client)
            remote = run_fields(paths, tmp_path / "dask", settings, scheduler=client, progress=progress)
            assert progress.killed is not None
    finally:
        cluster.close()
    assert remote.exit_code == 0 and remote.backend == "dask", [f.error for f in remote.fields]
    for path in paths:
        stem = path.name.removesuffix(".fits")
        a = Table.read(tmp_path / "local" / stem / "catalog.ecsv")
        b = Table.read(tmp_path / "dask" / stem / "catalog.ecsv")
        assert a.colnames == b.colnames and len(a) == len(b) and (a["KIND"] == "component").sum() >= 5
        for name in a.colnames:
            assert np.array_equal(np.ma.filled(a[name]), np.ma.filled(b[name])), name
        for name in ("residual.fits", "components.fits"):
            with (
                fits.open(tmp_path / "local" / stem / name) as x,
                fits.open(tmp_path / "dask" / stem / name) as y,
            ):
                assert len(x) == len(y)
                assert all(np.array_equal(hx.data, hy.data, equal_nan=True) for hx, hy in zip(x[1:], y[1:]))
