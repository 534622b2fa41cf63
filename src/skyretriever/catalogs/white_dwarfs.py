"""The ``wd`` preset: the Gaia EDR3 white-dwarf catalogue of Gentile Fusillo et al. (2021).

The catalogue file (FITS, optionally gzipped, or CSV) is downloaded once from
``wd_catalog_url`` into the cache, under a name made from a hash of the URL,
and read from there afterwards, a chunk at a time (a gzipped FITS file is
unpacked once beside it, ``<name>.unpacked.fits``). Rows are kept when their probability of being
a white dwarf (``Pwd``) is at least ``min_wd_probability`` (0.75, the paper's
high-confidence sample) and they pass the ``cone``/``box``, magnitude (G) and
parallax cuts; ``max_rows`` keeps the first rows of the file.

Rows are named by ``WDJ_name`` and carry their Gaia ``source_id`` as
``gaia_id``, G magnitude and proper motion (positions at epoch 2016.0).

Examples
--------
>>> from skyretriever.catalogs import Catalog
>>> cat = Catalog(default="wd", mag_limit=17)                                 # doctest: +SKIP
>>> cat.get_row(0)["name"]                                                    # doctest: +SKIP
'WDJ000006.12+304425.67'
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from skyretriever.catalogs.catalog import (
    CatalogError,
    CatalogParameters,
    open_catalog_file,
    register_loader,
)
from skyretriever.catalogs.readers import ChunkedTable
from skyretriever.catalogs.remote import cache_path, cached_file, http_client, select_rows

__all__ = ["load_white_dwarfs"]

_SUFFIXES = (".fits.gz", ".fits", ".fit", ".csv.gz", ".csv")


def _suffix(url: str) -> str:
    """The file type of the URL's path (``.fits.gz``, ``.csv``...); FITS if it does not say."""
    name = PurePosixPath(urlsplit(url).path).name.lower()
    return next((suffix for suffix in _SUFFIXES if name.endswith(suffix)), ".fits")


def _check_download(path: Path) -> None:
    """A catalogue file (gzip, FITS or CSV text), not an error page."""
    with open(path, "rb") as handle:
        start = handle.read(64)
    if start[:2] == b"\x1f\x8b" or start.startswith(b"SIMPLE  ="):
        return
    if start.strip() and not start.lstrip().startswith(b"<"):
        return  # CSV
    raise ValueError(f"the download is not a catalogue file (it starts {start[:40]!r})")


@register_loader("wd_catalog", presets={"wd": {
    "kind": "wd_catalog", "mag_filter": "Gaia_G",
    "columns": {"name": "WDJ_name", "gaia_id": "source_id", "mag": "phot_g_mean_mag"},
}})
def load_white_dwarfs(pars: CatalogParameters) -> ChunkedTable:
    """The white dwarfs of the catalogue that pass the cuts (downloaded once, then cached).

    The cached file is read a chunk at a time, the cuts applied to each chunk; a
    compressed FITS file is unpacked once next to it, so its rows can be read in
    ranges.
    """
    url = pars.wd_catalog_url
    path = cache_path(pars, "wd", {"url": url}, suffix=_suffix(url))
    cached_file(pars, path, lambda temporary: http_client(pars).download(
        url, temporary, validator=_check_download, allowed_hosts=(url,)))
    where = f"white-dwarf catalogue {path}"

    def cuts(frame: pd.DataFrame) -> pd.DataFrame:
        if "Pwd" in frame:
            probability = pd.to_numeric(frame["Pwd"], errors="coerce").to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                frame = frame[probability >= pars.min_wd_probability].reset_index(drop=True)
        elif pars.min_wd_probability > 0:
            raise CatalogError(f"{where} has no 'Pwd' column for min_wd_probability; set "
                               "catalog.min_wd_probability: 0 to keep every row")
        return select_rows(frame, pars, mag="phot_g_mean_mag", where=where)

    return open_catalog_file(
        pars.model_copy(update={"kind": "file", "filename": str(path), "file_format": "auto"}),
        transform=cuts, max_rows=pars.max_rows, source_file=str(path), scratch_dir=path.parent)
