"""Reading TESS FFI cubes by byte ranges, and TESScut's zipped cutouts, into :class:`Cutout`\\ s.

A cube (astrocut's ``CubeFactory`` layout) is a primary header, then HDU 1: a
big-endian float32 array of numpy shape (rows, columns, cadences, 2) holding
flux and error, then HDU 2: a table with one row per FFI (times, ``DQUALITY``,
``BARYCORR`` and each FFI's WCS). TICA cubes (``tess/public/mast/tica/``) have a
longer primary header, one plane (flux only: the errors stay NaN) and
``STARTTJD``, ``ENDTJD`` and ``QUAL_BIT`` in the table. The headers are read once per cube
(:class:`CubeLayout`, from ranges at the start of the file and after the data);
a cutout of ``ny`` rows is ``ny`` contiguous byte ranges, one per pixel row,
merged where they are close (:func:`row_ranges`). The cutout's limits and WCS
come from astrocut's own functions, so the arrays are those astrocut cuts.

Examples
--------
>>> row_ranges(data_start=5760, columns=100, cadences=10, rows=(3, 5), cols=(10, 14),
...            merge_gap=0)
[(30560, 30879), (38560, 38879)]
"""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from skyretriever.models.images import Cutout

__all__ = ["BLOCK", "CubeError", "CubeLayout", "cutout_from_ranges", "cutouts_from_zip",
           "read_layout", "row_ranges"]

#: FITS blocks are 2880 bytes.
BLOCK = 2880
_CARD = 80


class CubeError(ValueError):
    """A cube, a range of it, or a TESScut answer is not what it should be."""


def _header_length(data: bytes) -> int | None:
    """Bytes of the FITS header at the start of ``data`` (whole blocks), None if END is not in it."""
    for index in range(0, len(data) - _CARD + 1, _CARD):
        if data[index:index + 8] == b"END     ":
            return (index // BLOCK + 1) * BLOCK
    return None


@dataclass
class CubeLayout:
    """What is needed to cut a cube: where its data is, its shape, its FFIs' table, its WCS."""

    key: str
    sector: int
    camera: int
    ccd: int
    data_start: int
    rows: int
    columns: int
    cadences: int
    primary_header: str
    table: Any
    wcs: Any
    #: Values per pixel and cadence: 2 (flux and error, SPOC) or 1 (flux only, TICA).
    planes: int = 2


def read_layout(key: str, read: Callable[[int, int], bytes]) -> CubeLayout:
    """The layout of the cube at ``key``; ``read(first, last)`` gives bytes first..last inclusive.

    Reads the primary and image headers from the start of the file (growing the
    read until END is found) and the FFI table after the data, looking one block
    early too, as some cubes have it there.
    """
    import astrocut
    from astropy.io import fits

    def header_at(offset: int, data: bytes = b"") -> tuple[fits.Header, int]:
        size = 4 * BLOCK
        while True:
            data = data or read(offset, offset + size - 1)
            length = _header_length(data)
            if length is not None:
                return fits.Header.fromstring(data[:length].decode("ascii")), length
            if len(data) < size or size > 256 * BLOCK:
                raise CubeError(f"{key}: no FITS header END within {len(data)} bytes of {offset}")
            size *= 4
            data = b""

    # One read holds the primary and image headers of SPOC cubes (TICA's are longer).
    start = read(0, 8 * BLOCK - 1)
    primary, primary_length = header_at(0, start)
    rest = start[primary_length:]
    image, image_length = header_at(primary_length,
                                    rest if _header_length(rest) is not None else b"")
    if image.get("NAXIS") != 4 or image.get("NAXIS1") not in (1, 2) or image.get("BITPIX") != -32:
        raise CubeError(f"{key}: HDU 1 is not a cube of (2 or 1, cadences, columns, rows) float32")
    planes = int(image["NAXIS1"])
    cadences, columns, rows = int(image["NAXIS2"]), int(image["NAXIS3"]), int(image["NAXIS4"])
    data_start = primary_length + image_length
    data_bytes = 4 * planes * cadences * columns * rows
    table_start = data_start + -(-data_bytes // BLOCK) * BLOCK
    table = None
    around = read(table_start - BLOCK, table_start + 8 * BLOCK - 1)
    for start in (table_start, table_start - BLOCK):
        head = around[start - table_start + BLOCK:]
        if head.startswith(b"XTENSION="):
            header, length = header_at(start, head if _header_length(head) is not None else b"")
            size = int(header["NAXIS1"]) * int(header["NAXIS2"]) + int(header.get("PCOUNT", 0))
            body = read(start + length, start + length + size - 1)
            padding = b"\0" * (-(len(body)) % BLOCK)
            hdus = fits.HDUList.fromstring(fits.PrimaryHDU().header.tostring().encode()
                                           + header.tostring().encode() + body + padding)
            table = hdus[1].data
            break
    if table is None:
        raise CubeError(f"{key}: no FFI table after the cube's data (at byte {table_start})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wcs = astrocut.TessCubeCutout.parse_table_wcs(table)
    # TICA cubes name the camera and CCD CAMNUM and CCDNUM.
    return CubeLayout(key=key, sector=int(primary.get("SECTOR", 0)),
                      camera=int(primary.get("CAMERA", primary.get("CAMNUM", 0))),
                      ccd=int(primary.get("CCD", primary.get("CCDNUM", 0))),
                      data_start=data_start, rows=rows, columns=columns, cadences=cadences,
                      primary_header=primary.tostring(), table=table, wcs=wcs, planes=planes)


def cutout_limits(layout: CubeLayout, ra: float, dec: float, size: int
                  ) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """(row limits, column limits) of a cutout (astrocut's), or None if off the cube's pixels."""
    from astrocut.utils.utils import get_cutout_limits
    from astropy.coordinates import SkyCoord

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            limits = get_cutout_limits(layout.wcs, SkyCoord(ra, dec, unit="deg"), [size, size])
    except Exception:       # astrocut: off the footprint (no convergence, NaN)
        return None
    (c0, c1), (r0, r1) = (int(v) for v in limits[0]), (int(v) for v in limits[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        column, row = layout.wcs.all_world2pix([[ra, dec]], 0)[0]
    # The star itself must be on the CCD's pixels (a cutout may reach past an edge).
    if not (-0.5 <= column < layout.columns - 0.5 and -0.5 <= row < layout.rows - 0.5):
        return None
    return (r0, r1), (c0, c1)


def row_ranges(data_start: int, columns: int, cadences: int, rows: tuple[int, int],
               cols: tuple[int, int], merge_gap: int = 16384, planes: int = 2
               ) -> list[tuple[int, int]]:
    """The inclusive byte ranges holding rows ``rows[0]..rows[1]-1``, columns ``cols`` of a cube
    (``planes`` float32 values per pixel and cadence), consecutive ones merged when fewer than
    ``merge_gap`` bytes lie between them."""
    pixel = planes * 4 * cadences
    ranges: list[tuple[int, int]] = []
    for row in range(rows[0], rows[1]):
        first = data_start + (row * columns + cols[0]) * pixel
        last = data_start + (row * columns + cols[1]) * pixel - 1
        if ranges and first - ranges[-1][1] - 1 <= merge_gap:
            ranges[-1] = (ranges[-1][0], last)
        else:
            ranges.append((first, last))
    return ranges


def cutout_from_ranges(layout: CubeLayout, limits: tuple[tuple[int, int], tuple[int, int]],
                       fetch: Callable[[list[tuple[int, int]]], list[bytes]],
                       merge_gap: int = 16384) -> Cutout:
    """A cutout read through ``fetch(ranges) -> bodies``; pixels off the CCD are NaN (as astrocut)."""
    from astropy.wcs import WCS

    (r0, r1), (c0, c1) = limits
    rows, cols = (max(r0, 0), min(r1, layout.rows)), (max(c0, 0), min(c1, layout.columns))
    ranges = row_ranges(layout.data_start, layout.columns, layout.cadences, rows, cols, merge_gap,
                        layout.planes)
    bodies = fetch(ranges)
    for (first, last), body in zip(ranges, bodies):
        if len(body) != last - first + 1:
            raise CubeError(f"{layout.key}: asked for bytes {first}-{last}, got {len(body)} bytes")
    planes = layout.planes
    pixel = planes * 4 * layout.cadences
    width = (cols[1] - cols[0]) * pixel
    flux = np.full((layout.cadences, r1 - r0, c1 - c0), np.nan, np.float32)
    error = np.full_like(flux, np.nan)
    row = rows[0]
    for (first, _), body in zip(ranges, bodies):
        offset = 0
        while offset < len(body):
            start = first + offset
            expected = layout.data_start + (row * layout.columns + cols[0]) * pixel
            if start != expected:
                raise CubeError(f"{layout.key}: ranges out of step at byte {start}")
            values = np.frombuffer(body, dtype=">f4", count=width // 4, offset=offset)
            values = values.reshape(cols[1] - cols[0], layout.cadences, planes)
            flux[:, row - r0, cols[0] - c0:cols[1] - c0] = values[:, :, 0].T
            if planes == 2:  # TICA cubes have no error plane: it stays NaN
                error[:, row - r0, cols[0] - c0:cols[1] - c0] = values[:, :, 1].T
            row += 1
            offset += layout.columns * pixel if row < rows[1] else len(body)
    if row != rows[1]:
        raise CubeError(f"{layout.key}: the ranges held {row - rows[0]} rows of {rows[1] - rows[0]}")
    table = layout.table
    names = set(table.names)
    # SPOC cubes: TSTART, TSTOP, DQUALITY; TICA cubes: STARTTJD, ENDTJD, QUAL_BIT.
    start, stop = ("TSTART", "TSTOP") if "TSTART" in names else ("STARTTJD", "ENDTJD")
    tstart, tstop = np.asarray(table[start], float), np.asarray(table[stop], float)
    quality = table["DQUALITY"] if "DQUALITY" in names else table["QUAL_BIT"]
    wcs = layout.wcs.deepcopy() if hasattr(layout.wcs, "deepcopy") else WCS(layout.wcs.to_header())
    wcs.wcs.crpix = [wcs.wcs.crpix[0] - c0, wcs.wcs.crpix[1] - r0]
    if wcs.sip is not None:
        from astropy.wcs import Sip

        sip = wcs.sip
        wcs.sip = Sip(sip.a, sip.b, sip.ap, sip.bp, [sip.crpix[0] - c0, sip.crpix[1] - r0])
    return Cutout(
        sector=layout.sector, camera=layout.camera, ccd=layout.ccd,
        time=(tstart + tstop) / 2.0,
        timecorr=np.asarray(table["BARYCORR"], float) if "BARYCORR" in table.names
        else np.zeros(len(tstart)),
        cadenceno=np.arange(len(tstart), dtype=np.int64),
        flux=flux, flux_err=error,
        quality=np.asarray(quality, np.int32),
        wcs_header=wcs.to_header(relax=True).tostring(),
        primary_header=layout.primary_header, corner=(r0, c0),
        extra={"route": "s3", "cube": layout.key, "ranges": len(ranges), "planes": planes,
               "bytes": int(sum(last - first + 1 for first, last in ranges))},
    )


def cutouts_from_zip(body: bytes, what: str) -> list[Cutout]:
    """The cutouts in a TESScut zip (astrocut's target-pixel files), checked.

    Raises
    ------
    CubeError
        If the body is not a zip, or a member is not a cutout file.
    """
    from astropy.io import fits
    from astropy.wcs import WCS

    if not zipfile.is_zipfile(io.BytesIO(body)):
        raise CubeError(f"{what}: the answer is not a zip ({len(body)} bytes)")
    cutouts = []
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        for name in archive.namelist():
            try:
                with fits.open(io.BytesIO(archive.read(name))) as hdus:
                    primary, pixels, aperture = hdus[0].header, hdus[1].data, hdus[2].header
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        wcs = WCS(aperture)
                    flux = np.asarray(pixels["FLUX"], np.float32)
                    cutouts.append(Cutout(
                        sector=int(primary["SECTOR"]), camera=int(primary["CAMERA"]),
                        ccd=int(primary["CCD"]), time=np.asarray(pixels["TIME"], float),
                        timecorr=np.asarray(pixels["TIMECORR"], float),
                        cadenceno=np.asarray(pixels["CADENCENO"], np.int64), flux=flux,
                        flux_err=np.asarray(pixels["FLUX_ERR"], np.float32),
                        quality=np.asarray(pixels["QUALITY"], np.int32),
                        wcs_header=wcs.to_header(relax=True).tostring(),
                        primary_header=primary.tostring(),
                        corner=(int(aperture.get("CRVAL2P", 1)) - 1,
                                int(aperture.get("CRVAL1P", 1)) - 1),
                        extra={"route": "tesscut", "member": name}))
            except (OSError, KeyError, IndexError, TypeError, ValueError) as error:
                raise CubeError(f"{what}: member {name!r} is not a cutout file: {error}") from None
    return cutouts
