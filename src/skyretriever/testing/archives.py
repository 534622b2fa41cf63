"""SimulatedArchives: the MAST portal and the S3 bucket over one simulated sky, on loopback.

Each archive gets its own :class:`~skyretriever.testing.server.ArchiveServer`
(its own port, so clients see two hosts, as with mast.stsci.edu and
s3.amazonaws.com), with its own fault knobs. More servers (IRSA, TAP) can be
added with :meth:`SimulatedArchives.add_server`.

Examples
--------
>>> from skyretriever.testing import SimulatedArchives, SimulatedSky
>>> with SimulatedArchives(SimulatedSky.random(3)) as archives:            # doctest: +SKIP
...     project = Project(name="sim", obs_names=["TESS"], TESS=archives.observatory_kwargs())
...     project.run()
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from skyretriever.testing.mast import MastService
from skyretriever.testing.s3 import BUCKET, S3Service
from skyretriever.testing.server import ArchiveServer, Faults, Service
from skyretriever.testing.sky import SimulatedSky

__all__ = ["SimulatedArchives"]


class SimulatedArchives:
    """The simulated MAST portal (``mast``) and S3 bucket (``s3``), started and stopped together.

    Parameters
    ----------
    sky
        What the archives hold.
    faults
        Fault knobs of every server (change them later with :meth:`set_faults`).
    mast_port, s3_port
        Ports to listen on (0 picks free ones).
    """

    def __init__(self, sky: SimulatedSky, faults: Faults | None = None, mast_port: int = 0,
                 s3_port: int = 0) -> None:
        self.sky = sky
        self.servers: dict[str, ArchiveServer] = {
            "mast": ArchiveServer([MastService(sky)], faults, port=mast_port, name="mast"),
            "s3": ArchiveServer([S3Service(sky)], faults, port=s3_port, name="s3"),
        }

    @property
    def mast(self) -> ArchiveServer:
        return self.servers["mast"]

    @property
    def s3(self) -> ArchiveServer:
        return self.servers["s3"]

    def add_server(self, name: str, services: Iterable[Service], faults: Faults | None = None,
                   port: int = 0) -> ArchiveServer:
        """Serve more simulated archives on a server of their own (started if the others are)."""
        if name in self.servers:
            raise ValueError(f"there is already a simulated {name!r} server")
        server = ArchiveServer(services, faults, port=port, name=name)
        self.servers[name] = server
        if self.mast.running:
            server.start()
        return server

    def start(self) -> SimulatedArchives:
        for server in self.servers.values():
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()

    def __enter__(self) -> SimulatedArchives:
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    @property
    def mast_url(self) -> str:
        return self.mast.url

    @property
    def s3_endpoint_url(self) -> str:
        return self.s3.url

    def observatory_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Parameters that point a TESS, K2 or Kepler observatory at these archives."""
        return {"mast_url": self.mast_url, "s3_endpoint_url": self.s3_endpoint_url,
                "s3_bucket": BUCKET, **overrides}

    def set_faults(self, faults: Faults | None = None, servers: Iterable[str] | None = None
                   ) -> None:
        """Set the fault knobs of some servers (default: all); ``None`` clears them."""
        for name in servers if servers is not None else self.servers:
            self.servers[name].faults = faults or Faults()

    def reset_stats(self) -> None:
        for server in self.servers.values():
            server.reset_stats()
