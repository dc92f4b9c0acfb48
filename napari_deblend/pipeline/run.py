"""``run_fields``: the headless pipeline over many fields, tile by tile, here or on a Dask cluster.

Per field: read and subtract the background once (:mod:`.prepare`), detect,
deblend and measure tile by tile (:mod:`.tiles`), merge the tiles into the
outputs (:mod:`.assemble`).  Everything a step finishes is on disk before the
next starts, so an interrupted run resumes where it stopped; a field that
fails (missing file, unreadable FITS, ...) is reported and the others go on.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..checks import check_output_folder
from ..errors import DeblendInputError
from .assemble import assemble_field, versions
from .dask_backend import check_backend_options, make_backend
from .layout import FieldJob, RunSettings, field_stem
from .lock import RunFolderLock
from .outputs import read_json, write_json
from .prepare import prepare_field
from .progress import RunProgress
from .tiles import process_tile
from .tiling import plan_tiles

RUN_RECORD = "run.json"


@dataclass
class FieldReport:
    """How one field of a run went."""

    path: str
    out_dir: Path
    status: str = "pending"  # done, already done, failed
    error: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether the field's outputs are complete."""
        return self.status in ("done", "already done")


@dataclass
class RunSummary:
    """The outcome of :func:`run_fields`."""

    out_dir: Path
    fields: list[FieldReport]
    seconds: float
    backend: str
    workers: int

    @property
    def failed(self) -> list[FieldReport]:
        """Fields whose outputs are missing."""
        return [f for f in self.fields if not f.ok]

    @property
    def exit_code(self) -> int:
        """0 if every field is done, 1 otherwise."""
        return 1 if self.failed else 0

    def totals(self) -> dict[str, float]:
        """Detections, blends, single detections deblended, components, megapixels and seconds per stage, over the finished fields."""
        out: dict[str, float] = {"detections": 0, "blends": 0, "singles": 0, "components": 0, "megapixels": 0.0}
        for report in self.fields:
            record = report.record
            if not record:
                continue
            for key in ("detections", "blends", "singles", "components"):
                out[key] += record.get(key, 0)
            height, width = record.get("shape", (0, 0))
            out["megapixels"] += height * width / 1e6
            for stage, seconds in record.get("timings", {}).items():
                out[f"seconds_{stage}"] = out.get(f"seconds_{stage}", 0.0) + seconds
        return out


def run_fields(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    settings: RunSettings | None = None,
    *,
    overwrite: bool = False,
    scheduler: Any = None,
    dask_cluster: str | None = None,
    retries: int = 2,
    progress: RunProgress | bool | None = None,
) -> RunSummary:
    """Detect, deblend and measure every blend of every field; write per-field outputs under ``out_dir``.

    Parameters
    ----------
    paths : sequence of str or Path
        FITS files, one field each.
    out_dir : str or Path
        Output directory; field ``a.fits`` goes to ``out_dir/a/`` (see
        :mod:`napari_deblend.pipeline.layout`). Created if needed.
    settings : RunSettings, optional
        Model, device, detection, tiling (default: ``RunSettings()``).
    overwrite : bool
        Start again from nothing in a directory holding a run (of different or
        the same parameters). Without it a run of the same parameters resumes
        and one of different parameters is refused.
    scheduler : str or distributed.Client, optional
        A Dask scheduler address (``tcp://host:8786``) or client.
    dask_cluster : str, optional
        ``"local:N"``: a local Dask cluster of N worker processes, for this run.
    retries : int
        Dask retries of a task that raised.
    progress : RunProgress or bool, optional
        Where progress goes; True/None: a bar on a terminal, log lines otherwise; False: silent.

    Returns
    -------
    RunSummary
        Per field: status, error, record (counts, timings). ``exit_code`` is 1
        if any field failed.

    Raises
    ------
    DeblendInputError
        No field; two fields with the same file name; an output directory of a
        different run without ``overwrite``; an unknown model or detection
        parameter; bad tiling or Dask options.
    """
    start = time.perf_counter()
    settings = settings or RunSettings()
    out_dir = Path(out_dir)
    # every option is checked before anything is read, connected, started or written
    jobs = _jobs(paths, out_dir, settings)
    _check_settings(settings, local=scheduler is None and dask_cluster is None)
    check_backend_options(scheduler, dask_cluster, retries)
    check_output_folder(out_dir, "--out")
    backend = make_backend(scheduler, dask_cluster, retries=retries)
    reporter = progress if isinstance(progress, RunProgress) else RunProgress(enabled=progress is not False)
    reports = {job.path: FieldReport(job.path, job.out_dir) for job in jobs}
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with RunFolderLock(out_dir):
            _claim_out_dir(out_dir, settings, jobs, overwrite)
            workers = backend.workers
            pending = []
            for job in jobs:
                record = read_json(job.paths.run_json)
                if record is not None and record.get("status") == "done":
                    reports[job.path].status, reports[job.path].record = "already done", record
                    reporter.log(f"{job.name}: already done")
                else:
                    pending.append(job)
            _run_pending(backend, pending, reports, reporter)
            summary = RunSummary(out_dir, list(reports.values()), time.perf_counter() - start, backend.name, workers)
            _write_run_record(out_dir, settings, summary)
    finally:
        reporter.close()
        backend.close()
    return summary


def _jobs(paths: Sequence[str | Path], out_dir: Path, settings: RunSettings) -> list[FieldJob]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise DeblendInputError("no field given: expected one or more FITS files")
    by_stem: dict[str, str] = {}
    jobs = []
    for path in paths:
        stem = field_stem(path)
        if stem in by_stem:
            raise DeblendInputError(
                f"{path} and {by_stem[stem]} would both write to {out_dir / stem}: expected distinct file names"
            )
        by_stem[stem] = str(path)
        jobs.append(FieldJob(str(path), out_dir / stem, settings))
    return jobs


def _check_settings(settings: RunSettings, local: bool = True) -> None:
    """Detection parameters, model, device and tiling; the device is looked for here only for a local run."""
    from ..candidates import check_mode
    from ..deblenders.base import available_deblenders, check_device_name, resolve_device
    from ..detection import get_detection_preset
    from ..presets import get_preset

    check_mode(settings.candidates)
    get_detection_preset(settings.detection_preset, **settings.detection_overrides)
    get_preset(settings.survey)
    known = available_deblenders()
    if settings.model not in known:
        raise DeblendInputError(f"unknown model {settings.model!r}: expected one of {', '.join(known)}")
    if settings.give_back_pieces is not None:
        if settings.model != "peeling":
            raise DeblendInputError(f"--give-back-pieces: only peeling has a split verifier, not {settings.model}")
        if not 0.0 < settings.give_back_pieces <= 1.0:
            raise DeblendInputError(f"--give-back-pieces {settings.give_back_pieces}: expected a galaxy probability "
                                    "above 0 and at most 1")
    if local:
        resolve_device(settings.device)  # workers of a Dask cluster may have devices this machine lacks
    else:
        check_device_name(settings.device)
    plan_tiles((1, 1), settings.tile_size, settings.overlap)  # validates the tiling options


def _claim_out_dir(out_dir: Path, settings: RunSettings, jobs: list[FieldJob], overwrite: bool) -> None:
    """Refuse a directory holding another run (unless ``overwrite``: then clear this run's fields); record ours."""
    if out_dir.exists() and not out_dir.is_dir():
        raise DeblendInputError(f"--out {out_dir} is a file: expected a directory")
    record_path = out_dir / RUN_RECORD
    previous = read_json(record_path) if record_path.exists() else None
    if record_path.exists() and previous is None and not overwrite:
        raise DeblendInputError(
            f"{record_path} is not a napari-deblend run record: expected --overwrite to replace it"
        )
    if previous is not None and previous.get("parameters") != settings.identity() and not overwrite:
        changed = sorted(
            k for k in set(previous.get("parameters", {})) | set(settings.identity())
            if previous.get("parameters", {}).get(k) != settings.identity().get(k)
        )  # fmt: skip
        raise DeblendInputError(
            f"{out_dir} holds a run with different parameters ({', '.join(changed)}): "
            "expected another --out directory, or --overwrite to replace it"
        )
    if overwrite:
        for job in jobs:
            if job.out_dir.exists():
                shutil.rmtree(job.out_dir)
    fields = dict((previous or {}).get("fields", {})) if not overwrite else {}
    write_json(
        {"status": "running", "parameters": settings.identity(), "device": settings.device,
         "versions": versions(), "fields": fields},
        record_path,
    )  # fmt: skip


def _run_pending(
    backend: Any, jobs: list[FieldJob], reports: dict[str, FieldReport], reporter: RunProgress
) -> None:
    """Prepare every field, then run all their tiles, then assemble each field whose tiles all finished."""
    infos: dict[str, dict[str, Any]] = {}
    for job, info, error in backend.map_unordered(prepare_field, jobs, name="prepare"):
        if error is not None:
            _fail(reports[job.path], job, "reading", error, reporter)
        else:
            infos[job.path] = info
            reporter.log(
                f"{job.name}: {info['shape'][0]}x{info['shape'][1]} pixels, {len(info['band_names'])} band(s)"
            )
    tile_jobs = []
    for job in jobs:
        if job.path in infos:
            shape = infos[job.path]["shape"]
            for tile in plan_tiles(shape, job.settings.tile_size, job.settings.overlap):
                tile_jobs.append((job, infos[job.path], tile))
    reporter.set_total(len(tile_jobs))
    summaries: dict[str, list[dict[str, Any]]] = {path: [] for path in infos}
    for (job, _, tile), summary, error in backend.map_unordered(_tile_task, tile_jobs, name="tile"):
        if error is not None:
            if reports[job.path].status != "failed":
                _fail(reports[job.path], job, f"tile {tile.index}", error, reporter)
            continue
        summaries[job.path].append(summary)
        reporter.tile_done(job.name, tile.index, summary["blends"], resumed=bool(summary.get("resumed")))
    ready = [(job, infos[job.path], summaries[job.path]) for job in jobs
             if job.path in infos and reports[job.path].status != "failed"]  # fmt: skip
    for (job, _, _), record, error in backend.map_unordered(_assemble_task, ready, name="assemble"):
        if error is not None:
            _fail(reports[job.path], job, "writing", error, reporter)
            continue
        reports[job.path].status, reports[job.path].record = "done", record
        reporter.log(
            f"{job.name}: {record['detections']} detections, {record['blends']} blends, "
            f"{record.get('singles', 0)} single detections, {record['components']} components -> {job.out_dir}"
        )


def _tile_task(item: tuple[FieldJob, dict[str, Any], Any]) -> dict[str, Any]:
    return process_tile(*item)


def _assemble_task(item: tuple[FieldJob, dict[str, Any], list[dict[str, Any]]]) -> dict[str, Any]:
    return assemble_field(*item)


def _fail(
    report: FieldReport, job: FieldJob, stage: str, error: BaseException, reporter: RunProgress
) -> None:
    report.status = "failed"
    message = str(error) if isinstance(error, DeblendInputError) else f"{type(error).__name__}: {error}"
    report.error = f"{stage}: {message}"
    reporter.log(f"{job.name}: FAILED while {report.error}")


def _write_run_record(out_dir: Path, settings: RunSettings, summary: RunSummary) -> None:
    record = read_json(out_dir / RUN_RECORD) or {}
    fields = dict(record.get("fields", {}))
    for report in summary.fields:
        entry = {"path": report.path, "status": report.status, "out_dir": report.out_dir.name}
        if report.error:
            entry["error"] = report.error
        if report.record:
            entry.update({k: report.record.get(k) for k in ("detections", "blends", "singles", "components",
                                                            "timings")})
        fields[report.out_dir.name] = entry
    totals = summary.totals()
    write_json(
        {
            "status": "done" if not summary.failed else "failed",
            "parameters": settings.identity(),
            "device": settings.device,
            "napari_deblend": __version__,
            "versions": versions(),
            "backend": summary.backend,
            "workers": summary.workers,
            "seconds": summary.seconds,
            "totals": totals,
            "fields": fields,
        },
        out_dir / RUN_RECORD,
    )
