"""SimulatedArchives: the MAST portal, the S3 bucket (and IRSA, the catalogs) over one sky, on loopback.

Each archive gets its own :class:`~skyretriever.testing.server.ArchiveServer`
(its own port, so clients see two hosts, as with mast.stsci.edu and
s3.amazonaws.com), with its own fault knobs. More servers (IRSA, TAP) can be
added with :meth:`SimulatedArchives.add_server`; :meth:`SimulatedArchives.add_irsa`,
:meth:`SimulatedArchives.add_ibe` and :meth:`SimulatedArchives.add_catalogs` add the
ZTF light-curve API, ZTF's image search and cutouts, and the catalog services (Gaia and Exoplanet Archive TAP, the white-dwarf catalogue).

Examples
--------
>>> from skyretriever.testing import SimulatedArchives, SimulatedSky
>>> with SimulatedArchives(SimulatedSky.random(3)) as archives:            # doctest: +SKIP
...     project = Project(name="sim", obs_names=["TESS"], TESS=archives.observatory_kwargs())
...     project.run()
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from skyretriever.testing.hats import COLLECTION_PREFIX, HATS_BUCKET, HatsBucketService
from skyretriever.testing.ibe import IbeService
from skyretriever.testing.irsa import IrsaService
from skyretriever.testing.mast import MastService
from skyretriever.testing.s3 import BUCKET, S3Service
from skyretriever.testing.server import ArchiveServer, Faults, Service
from skyretriever.testing.sky import SimulatedSky
from skyretriever.testing.tap import GAIA_PATH, WD_CATALOG_PATH, catalog_services

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

    # -- IRSA and the catalog services ----------------------------------------------------------
    def add_irsa(self, faults: Faults | None = None, port: int = 0, **options: Any
                 ) -> ArchiveServer:
        """Serve the ZTF light-curve API (``irsa``) over the same sky; ``options`` go to
        :class:`~skyretriever.testing.irsa.IrsaService` (``collections``, ``private``)."""
        return self.add_server("irsa", [IrsaService(self.sky, **options)], faults, port)

    def add_catalogs(self, faults: Faults | None = None, port: int = 0,
                     max_sync_rows: int | None = 2000) -> ArchiveServer:
        """Serve the Gaia archive, the Exoplanet Archive and the white-dwarf catalogue of the
        sky on one server (``catalogs``; see :func:`~skyretriever.testing.tap.catalog_services`)."""
        return self.add_server("catalogs", catalog_services(self.sky, max_sync_rows), faults,
                               port)

    @property
    def irsa(self) -> ArchiveServer:
        return self.servers["irsa"]

    def add_ibe(self, faults: Faults | None = None, port: int = 0, **options: Any
                ) -> ArchiveServer:
        """Serve IRSA's Image Back End of ZTF's science images (``ibe``: search and cutouts)
        over the same sky; ``options`` go to :class:`~skyretriever.testing.ibe.IbeService`."""
        return self.add_server("ibe", [IbeService(self.sky, **options)], faults, port)

    @property
    def ibe(self) -> ArchiveServer:
        return self.servers["ibe"]

    def ztf_image_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Parameters that make a ZTF observatory fetch image cutouts from the simulated IBE."""
        return {"image_cutouts": True, "ibe_url": self.ibe.url + "/ibe", **overrides}

    @property
    def catalogs(self) -> ArchiveServer:
        return self.servers["catalogs"]

    def add_ztf_hats(self, root: Path | str, faults: Faults | None = None, port: int = 0
                     ) -> ArchiveServer:
        """Serve a folder as IRSA's ``ipac-irsa-ztf`` bucket (``ztf_hats``), where
        :func:`~skyretriever.testing.hats.build_ztf_collection` wrote the collection."""
        return self.add_server("ztf_hats", [HatsBucketService(root)], faults, port)

    @property
    def ztf_hats(self) -> ArchiveServer:
        return self.servers["ztf_hats"]

    def ztf_hats_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Parameters that point a ZTF observatory's ``hats`` route at the simulated bucket."""
        return {"route": "hats", "hats_url": f"s3://{HATS_BUCKET}/{COLLECTION_PREFIX}",
                "s3_endpoint_url": self.ztf_hats.url, **overrides}

    def ztf_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Parameters that point a ZTF observatory at the simulated IRSA."""
        return {"irsa_url": self.irsa.url, **overrides}

    def catalog_kwargs(self, **overrides: Any) -> dict[str, Any]:
        """Parameters that point the remote catalog presets at the simulated services."""
        url = self.catalogs.url
        return {"gaia_tap_url": url + GAIA_PATH,
                "exoplanet_archive_url": url,  # the client adds EXOPLANET_PATH + /sync
                "wd_catalog_url": url + WD_CATALOG_PATH, **overrides}

    def set_faults(self, faults: Faults | None = None, servers: Iterable[str] | None = None
                   ) -> None:
        """Set the fault knobs of some servers (default: all); ``None`` clears them."""
        for name in servers if servers is not None else self.servers:
            self.servers[name].faults = faults or Faults()

    def reset_stats(self) -> None:
        for server in self.servers.values():
            server.reset_stats()
