"""The progress of runs and reports: a bar on a terminal, a line in the log every N seconds.

A batch job (nohup, SLURM) has no terminal: its log gets a line such as
``demo: 120 of 200 sources (done 100, skipped 15, failed 5), 2.4 per second, ETA 0:00:33``
every ``log_every`` seconds, at INFO on the logger ``skyretriever.progress``. Rows skipped
(already done) are not work: the rate and the ETA count only the work done and the
work left, on the bar too.

Examples
--------
>>> bar = progress_bar(3, enabled=False, desc="demo")
>>> bar.update(1)
>>> bar.update(1, outcome="skipped")
>>> bar.counts["skipped"], bar.remaining
(1, 1)
>>> bar.close()
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable

__all__ = ["OUTCOMES", "PROGRESS_LOGGER", "Progress", "format_duration", "progress_bar"]

#: The logger of the progress lines.
PROGRESS_LOGGER = "skyretriever.progress"

log = logging.getLogger(PROGRESS_LOGGER)

#: What became of an item: done (worked), skipped (found done already), failed.
OUTCOMES = ("done", "skipped", "failed")


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (days first when there are any).

    Examples
    --------
    >>> format_duration(3725.4), format_duration(90061)
    ('1:02:05', '1 d 1:01:01')
    """
    seconds = int(round(seconds))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days} d {text}" if days else text


class Progress:
    """Counts what became of ``total`` items; draws a bar and writes log lines as asked.

    Parameters
    ----------
    total
        How many items the work has.
    desc, unit
        What the bar and the lines call the work and one item.
    bar
        Whether to draw a bar (tqdm) on stderr; it hides itself where stderr is no terminal.
    log_every
        Seconds between two log lines (``None``: no lines).
    clock
        The time in seconds (for tests).

    Examples
    --------
    >>> ticks = iter([0.0, 5.0, 15.0, 15.0])
    >>> progress = Progress(100, "demo", log_every=None, clock=lambda: next(ticks))
    >>> progress.update(50, outcome="skipped")      # found done in five seconds: no work
    >>> progress.update(10)                         # ten sources worked in ten seconds
    >>> round(progress.eta())                       # the 40 left, at one a second
    40
    """

    def __init__(self, total: int, desc: str, unit: str = "source", *, bar: bool = False,
                 log_every: float | None = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total = total
        self.desc = desc
        self.unit = unit
        self.counts: Counter = Counter({outcome: 0 for outcome in OUTCOMES})
        self.log_every = log_every
        self._clock = clock
        self._begin = clock()
        self._last_line = self._last_update = self._begin
        self._skipping = 0.0    # seconds spent on rows found done: not the pace of the work
        self._bar = None
        if bar:
            from tqdm.auto import tqdm

            tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked from here
            self._bar = tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, disable=None,
                             mininterval=0.5)

    @property
    def finished(self) -> int:
        """Items done, skipped or failed."""
        return sum(self.counts[outcome] for outcome in OUTCOMES)

    @property
    def remaining(self) -> int:
        """Items not reached yet (the work left, as far as can be known)."""
        return max(0, self.total - self.finished)

    def rate(self) -> float:
        """Items worked (done or failed, not skipped) per second spent on them."""
        elapsed = self._clock() - self._begin - self._skipping
        worked = self.counts["done"] + self.counts["failed"]
        return worked / elapsed if elapsed > 0 else 0.0

    def eta(self) -> float | None:
        """Seconds until the items left are worked at the rate so far (``None``: no rate yet)."""
        rate = self.rate()
        if not self.remaining:
            return 0.0
        return self.remaining / rate if rate > 0 else None

    def line(self) -> str:
        """One line saying where the work stands."""
        eta = self.eta()
        plural = self.unit if self.total == 1 else f"{self.unit}s"
        return (f"{self.desc}: {self.finished} of {self.total} {plural} ("
                + ", ".join(f"{outcome} {self.counts[outcome]}" for outcome in OUTCOMES)
                + f"), {self.rate():.2f} per second, ETA "
                + ("unknown" if eta is None else format_duration(eta)))

    def update(self, n: int = 1, outcome: str = "done") -> None:
        """Count ``n`` more items that were ``done``, ``skipped`` or ``failed``."""
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
        self.counts[outcome] += n
        now = self._clock()
        if outcome == "skipped":
            self._skipping += now - self._last_update
        self._last_update = now
        if self._bar is not None:
            if outcome == "skipped":
                # Skipped rows leave the bar's total, so its rate and ETA are those of the work.
                self._bar.total = max(self._bar.n, self._bar.total - n)
            else:
                self._bar.update(n)
            if self.counts["skipped"] or self.counts["failed"]:
                self._bar.set_postfix_str(f"skipped {self.counts['skipped']}, "
                                          f"failed {self.counts['failed']}", refresh=False)
        if self.log_every is not None and now - self._last_line >= self.log_every:
            self._last_line = now
            log.info("%s", self.line())

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "source",
                 log_every: float | None = 60.0) -> Progress:
    """Progress of ``total`` items (``update(n, outcome)``, ``close()``); silent when not enabled.

    An enabled bar still hides itself where stderr is no terminal (tqdm's
    ``disable=None``), redraws at most twice a second and starts no monitor thread
    (worker processes are forked from the process that shows it). Enabled, it also
    logs a line every ``log_every`` seconds (INFO, logger ``skyretriever.progress``;
    the command line shows them where stderr is no terminal, and in ``--log FILE``).
    """
    if not enabled:
        return Progress(total, desc, unit, bar=False, log_every=None)
    return Progress(total, desc, unit, bar=sys.stderr is not None, log_every=log_every)
