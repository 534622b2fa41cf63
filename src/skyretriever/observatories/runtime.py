"""Run-time state that is never pickled: HTTP clients, thread pools, locks, a batch's plans.

An observatory (or a client) is pickled to reach worker processes, which only
reduce: they need its parameters, never its sockets. A class lists the
attributes its :meth:`RuntimeState._init_runtime` makes in ``_RUNTIME``; they are
left out of the pickle and made again, empty, when it is loaded.

Examples
--------
>>> import threading
>>> class Counter(RuntimeState):
...     _RUNTIME = ("_lock",)
...     def __init__(self):
...         self.count = 3
...         self._init_runtime()
...     def _init_runtime(self):
...         self._lock = threading.Lock()
>>> state = Counter().__getstate__()        # what pickle stores
>>> state
{'count': 3}
>>> copy = Counter.__new__(Counter)
>>> copy.__setstate__(state)                # what pickle does on loading
>>> copy.count, type(copy._lock).__name__
(3, 'lock')
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

__all__ = ["RuntimeState"]


class RuntimeState(abc.ABC):
    """Pickles without its run-time attributes (pools, clients, locks), which are made again.

    Put it before the other bases: its ``__getstate__`` starts from theirs.
    """

    #: Names of the attributes :meth:`_init_runtime` makes; never pickled.
    _RUNTIME: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def _init_runtime(self) -> None:
        """Make the run-time attributes (called on construction and after unpickling)."""

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k not in self._RUNTIME}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_runtime()
