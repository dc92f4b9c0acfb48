"""Progress of a run: a tqdm bar on a terminal, plain log lines otherwise (files, CI logs, cluster jobs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class RunProgress:
    """Count finished tiles, and report messages, on ``stream``.

    Parameters
    ----------
    total : int
        Number of tiles to finish.
    stream : file-like, optional
        Where to write (default ``sys.stderr``).
    bar : bool, optional
        Force a bar (True) or log lines (False); default: a bar when ``stream`` is a terminal.
    enabled : bool
        False: report nothing.
    """

    def __init__(self, total: int = 0, stream: TextIO | None = None, bar: bool | None = None,
                 enabled: bool = True) -> None:  # fmt: skip
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.total = total
        self.done = 0
        self.start = time.perf_counter()
        isatty = getattr(self.stream, "isatty", lambda: False)
        self.use_bar = enabled and (bool(isatty()) if bar is None else bar)
        self._bar = None

    def set_total(self, total: int) -> None:
        """Set the number of tiles (known once the fields have been read)."""
        self.total = total
        if self.use_bar and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, unit="tile", file=self.stream, dynamic_ncols=True)
        elif self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def tile_done(self, field: str, tile: int, blends: int, resumed: bool = False) -> None:
        """One more tile finished (or found finished by an earlier run)."""
        self.done += 1
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(field, refresh=False)
            self._bar.update(1)
        else:
            what = "already done" if resumed else f"{blends} blends"
            self.log(f"{field}: tile {tile} {what} [{self.done}/{self.total} tiles, {self._elapsed()}]")

    def log(self, message: str) -> None:
        """A line of its own (above the bar when there is one)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        """Close the bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _elapsed(self) -> str:
        return f"{time.perf_counter() - self.start:.1f} s"
