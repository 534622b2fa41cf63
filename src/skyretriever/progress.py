"""The progress bar of runs and reports (tqdm, imported only when a bar is shown).

Examples
--------
>>> bar = progress_bar(3, enabled=False, desc="demo")
>>> bar.update(1)
>>> bar.close()
"""

from __future__ import annotations

from typing import Any

__all__ = ["progress_bar"]


class _NoProgress:
    """Stands in for a bar when none is shown."""

    def update(self, _n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, desc: str, unit: str = "source") -> Any:
    """A bar counting ``total`` items (``update(n)``, ``close()``); a silent stand-in when not enabled.

    An enabled bar still hides itself where the output is no terminal
    (tqdm's ``disable=None``), redraws at most twice a second and starts no
    monitor thread (worker processes are forked from the process that shows it).
    """
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    tqdm.monitor_interval = 0  # no monitor thread: worker processes are forked from this one
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, disable=None,
                mininterval=0.5)
