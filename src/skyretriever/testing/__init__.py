"""Simulated archives for tests, demos and users' own extensions.

Local HTTP servers speak the archives' protocols on the loopback interface,
over a :class:`SimulatedSky` of stars with known signals, with knobs for the
faults real archives have (latency, 503 and 429 with ``Retry-After``, resets,
timeouts, cut-short bodies, HTML error pages served as files, ``EXECUTING`` answers).

- :mod:`skyretriever.testing.server`: the server framework (:class:`ArchiveServer`,
  :class:`Service`, :class:`Route`, :class:`Request`, :class:`Reply`, :class:`Faults`);
- :mod:`skyretriever.testing.mast`: the MAST portal; :mod:`skyretriever.testing.s3`: the
  ``stpubdata`` bucket; :mod:`skyretriever.testing.fitsfiles`: TESS and Kepler/K2 files;
- :mod:`skyretriever.testing.sky` and :mod:`skyretriever.testing.stars`: the simulated sky and
  the stars and files it is made of;
- :class:`SimulatedArchives`: MAST and S3 together.

``python -m skyretriever.testing serve`` starts them and prints their URLs.

Examples
--------
>>> from skyretriever.testing import Faults, SimulatedArchives, SimulatedSky
>>> sky = SimulatedSky.random(10, seed=1, sectors_per_star=2)
>>> with SimulatedArchives(sky, Faults(latency=0.05)) as archives:         # doctest: +SKIP
...     print(archives.mast_url, archives.s3_endpoint_url)
"""

from __future__ import annotations

from skyretriever.testing.archives import SimulatedArchives
from skyretriever.testing.mast import MastService
from skyretriever.testing.s3 import BUCKET, S3Service
from skyretriever.testing.server import ArchiveServer, Faults, Reply, Request, Route, Service
from skyretriever.testing.sky import SimulatedSky
from skyretriever.testing.stars import Product, SimulatedStar, Transit

__all__ = [
    "BUCKET",
    "ArchiveServer",
    "Faults",
    "MastService",
    "Product",
    "Reply",
    "Request",
    "Route",
    "S3Service",
    "Service",
    "SimulatedArchives",
    "SimulatedSky",
    "SimulatedStar",
    "Transit",
]
