"""ZTF science-image cutouts from IRSA's Image Back End (IBE): its search table, the cutout
URLs, and a cutout file as a :class:`~skyretriever.models.images.Cutout`.

The search (``ibe/search/ztf/products/sci?POS=ra,dec&ct=csv``) answers one row
per science image holding the position (:func:`read_search_table`); each row
names its file (:func:`science_image_path`), and the cutout is that file's URL
with ``center=ra,dec&size=<w>arcsec&gzip=false`` (:func:`cutout_params`). A
cutout is a FITS image with the science image's header and a WCS moved to the
cutout; :func:`cutout_from_fits` keeps it as a one-frame :class:`Cutout`
(``sector`` is the ZTF field, ``camera`` the CCD, ``ccd`` the quadrant, ``time``
``obsjd - 2457000`` in UTC, ``quality`` the image's ``INFOBITS``), with a
per-pixel uncertainty from the header's gain and read noise (ZTF publishes no
uncertainty image for ``sciimg``).

Examples
--------
>>> science_image_path({"filefracday": 20180528201447, "field": 719, "filtercode": "zr",
...                     "ccdid": 7, "imgtypecode": "o", "qid": 3})
'2018/0528/201447/ztf_20180528201447_000719_zr_c07_o_q3_sciimg.fits'
>>> cutout_params(10.5, -20.25, 30.0)
{'center': '10.5,-20.25', 'size': '30.0arcsec', 'gzip': 'false'}
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from skyretriever.fitsfile import InvalidFileError, scan_fits
from skyretriever.models.images import BTJD_TO_MJD, Cutout
from skyretriever.net import BadAnswer, Response, TransientError

__all__ = ["JD_ZERO", "SEARCH_COLUMNS", "SEARCH_PATH", "SCIENCE_PATH", "cutout_from_fits",
           "cutout_params", "fits_answer", "read_search_table", "science_image_path"]

#: The search of ZTF's science images, under the IBE base URL.
SEARCH_PATH = "search/ztf/products/sci"
#: Where the science images are, under the IBE base URL.
SCIENCE_PATH = "data/ztf/products/sci"
#: Columns of the search table the cutouts need (IBE sends more).
SEARCH_COLUMNS = ("obsjd", "field", "ccdid", "qid", "filtercode", "imgtypecode", "filefracday")
#: ``Cutout.time`` of ZTF cutouts is ``obsjd`` less this (the zero of TESS's BTJD, so the
#: image data type's summaries read both the same way).
JD_ZERO = 2457000.0
_HTML = ("<!doctype html", "<html")


def read_search_table(text: str, where: str = "IBE's ZTF search") -> pd.DataFrame:
    """IBE's CSV search table; no rows when nothing holds the position.

    Raises
    ------
    BadAnswer
        If a column the cutouts need is missing, or holds something that is not a number.

    Examples
    --------
    >>> read_search_table("obsjd,field,ccdid,qid,filtercode,imgtypecode,filefracday\\n").shape
    (0, 7)
    """
    if not text.strip():
        return pd.DataFrame({column: pd.Series(dtype=float) for column in SEARCH_COLUMNS})
    try:
        frame = pd.read_csv(io.StringIO(text), dtype={"filtercode": str, "imgtypecode": str})
    except (ValueError, pd.errors.ParserError) as error:
        raise BadAnswer(f"{where} cannot be read as CSV: {' '.join(str(error).split())[:200]}"
                        ) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in SEARCH_COLUMNS if c not in frame]
    if missing:
        raise BadAnswer(f"{where} lacks the column(s) {', '.join(missing)} "
                        f"(it has {', '.join(map(str, frame.columns))})")
    for column in ("obsjd", "field", "ccdid", "qid", "filefracday"):
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy())
        if len(bad):
            raise BadAnswer(f"{where}: column {column!r} has {frame[column].iloc[bad[0]]!r} on "
                            f"line {bad[0] + 2}, not a number")
        frame[column] = values
    for column in ("field", "ccdid", "qid", "filefracday"):
        frame[column] = frame[column].astype(np.int64)
    return frame.sort_values(["obsjd", "filtercode"], kind="stable").reset_index(drop=True)


def science_image_path(row: Mapping[str, Any]) -> str:
    """The path of a search row's science image, under ``data/ztf/products/sci/``."""
    day = f"{int(row['filefracday']):014d}"
    return (f"{day[:4]}/{day[4:8]}/{day[8:]}/ztf_{day}_{int(row['field']):06d}_"
            f"{row['filtercode']}_c{int(row['ccdid']):02d}_{row['imgtypecode']}_"
            f"q{int(row['qid'])}_sciimg.fits")


def cutout_params(ra: float, dec: float, size_arcsec: float) -> dict[str, str]:
    """The query of a cutout ``size_arcsec`` wide centred on ``ra, dec`` (degrees), uncompressed."""
    return {"center": f"{float(ra)!r},{float(dec)!r}", "size": f"{float(size_arcsec)!r}arcsec",
            "gzip": "false"}


def fits_answer(what: str):
    """An ``accept`` for :meth:`skyretriever.net.HttpClient.request`: the body of a whole FITS
    file; an HTML page or a file cut short is asked again."""

    def accept(response: Response) -> bytes:
        body = response.body
        if body.lstrip()[:14].lower().startswith(tuple(h.encode() for h in _HTML)):
            raise TransientError(f"{what}: an HTML page instead of a FITS file")
        try:
            scan_fits(body)
        except InvalidFileError as error:
            raise TransientError(f"{what}: not a whole FITS file ({error})") from None
        return body

    return accept


def cutout_from_fits(body: bytes, ra: float, dec: float, what: str,
                     row: Mapping[str, Any] | None = None) -> Cutout:
    """One IBE cutout as a one-frame :class:`Cutout`, checked to hold ``ra, dec``.

    ``row`` is the image's row of the search table: its field, CCD, quadrant and
    filter are kept (else the header's ``FIELDID``, ``CCDID``, ``QID``, ``FILTER``).

    Raises
    ------
    BadAnswer
        If the file holds no 2-D image, has no usable WCS or time, or the
        position asked for is not on its pixels.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with fits.open(io.BytesIO(body)) as hdus:
                header = hdus[0].header.copy()
                image = hdus[0].data
                image = None if image is None else np.array(image, dtype=np.float32)
            wcs = WCS(header)
    except (OSError, ValueError, TypeError) as error:
        raise BadAnswer(f"{what}: not a FITS image ({error})") from None
    if image is None or image.ndim != 2 or not wcs.has_celestial:
        raise BadAnswer(f"{what}: the file holds no 2-D image with a celestial WCS")
    obsjd = header.get("OBSJD")
    if not isinstance(obsjd, (int, float)):
        raise BadAnswer(f"{what}: the header has no OBSJD")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x, y = wcs.all_world2pix([[ra, dec]], 0)[0]
    rows, columns = image.shape
    if not (-0.5 <= x < columns - 0.5 and -0.5 <= y < rows - 0.5):
        raise BadAnswer(f"{what}: the cutout sent does not hold the position asked for (it "
                        f"falls at pixel {x:.1f}, {y:.1f} of a {rows}x{columns} cutout)")
    gain = float(header.get("GAIN", 6.2))
    read_noise = float(header.get("READNOI", 8.0))   # electrons
    variance = np.clip(image, 0.0, None) / gain + (read_noise / gain) ** 2
    wcs_header = wcs.to_header(relax=True)
    row = dict(row or {})
    filtercode = row.get("filtercode") or ("z" + str(header.get("FILTER", "")).strip()[-1:].lower())
    return Cutout(
        sector=int(row.get("field", header.get("FIELDID", 0))),
        camera=int(row.get("ccdid", header.get("CCDID", 0))),
        ccd=int(row.get("qid", header.get("QID", 0))),
        time=np.array([float(obsjd) - JD_ZERO]), timecorr=np.zeros(1),
        cadenceno=np.zeros(1, np.int64), flux=image[None], flux_err=np.sqrt(variance)[None],
        quality=np.array([int(header.get("INFOBITS", 0))], np.int32),
        wcs_header=wcs_header.tostring(), primary_header=header.tostring(),
        # IBE keeps the science image's pixel numbers in LTV1/LTV2 (minus the offset).
        corner=(int(-header.get("LTV2", 0)), int(-header.get("LTV1", 0))),
        extra={"filtercode": filtercode, "magzp": _number(header.get("MAGZP")),
               "exptime": _number(header.get("EXPTIME")), "seeing": _number(header.get("SEEING")),
               "obsjd": float(obsjd), "mjd": float(obsjd) - JD_ZERO + BTJD_TO_MJD,
               "time_scale": "utc", "target": [float(ra), float(dec)],
               "pixel": [float(x), float(y)],
               "image": science_image_path(row) if row else None})


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None
