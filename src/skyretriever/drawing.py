"""Where the objects' ``.plot()`` methods find the functions that draw them.

The models (data layer) and :class:`~skyretriever.analysis.histogram.Histogram`
(domain layer) offer ``.plot()``, but drawing belongs to the presentation layer
(:mod:`skyretriever.plots`), which they must not import. So the methods call
:func:`draw` with the name of what they are, and :mod:`skyretriever.plots`
registers its functions under those names when it is imported. The package face
(``skyretriever/__init__``) imports :mod:`skyretriever.plots`, and any import of
a skyretriever module runs the face first, so the registry is always filled
before a user can call ``.plot()``.

Examples
--------
>>> from skyretriever import drawing
>>> sorted(drawing.registered())                                    # doctest: +SKIP
['detection', 'histogram', 'lightcurve', 'raw_photometry', 'source']
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["draw", "register", "registered"]

_DRAWERS: dict[str, Callable[..., Any]] = {}


def register(kind: str, function: Callable[..., Any]) -> None:
    """Make ``function(obj, **kwargs)`` the drawing of every object of this ``kind``."""
    _DRAWERS[kind] = function


def registered() -> tuple[str, ...]:
    """The kinds of object that can be drawn."""
    return tuple(_DRAWERS)


def draw(kind: str, obj: Any, **kwargs: Any) -> Any:
    """Draw ``obj`` with the function registered for ``kind``; returns what it returns (a Figure)."""
    try:
        function = _DRAWERS[kind]
    except KeyError:
        raise RuntimeError(f"nothing can draw a {kind.replace('_', ' ')}: the plots module "
                           f"(skyretriever.plots) registers the drawing functions when it is "
                           f"imported; import it first") from None
    return function(obj, **kwargs)
