"""Aperture photometry of a cutout with lightkurve's target-pixel machinery.

The aperture is a circle of ``aperture_radius`` pixels around the target's
pixel (from the cutout's WCS); the background per pixel is lightkurve's
estimate (``TargetPixelFile.estimate_background``) over the pixels farther than
``background_radius`` from the target, and the aperture's sum less that
background times its pixel count is the flux.

Examples
--------
>>> frame = lightcurve_frame(cutout, ra, dec, aperture_radius=2.0)    # doctest: +SKIP
>>> list(frame.columns)[:4]                                           # doctest: +SKIP
['mjd', 'btjd', 'flux', 'flux_err']
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from skyretriever.models.images import BTJD_TO_MJD, Cutout, cutout_hdulist

__all__ = ["apertures", "lightcurve_frame"]


def apertures(cutout: Cutout, ra: float, dec: float, aperture_radius: float,
              background_radius: float) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """The aperture and background masks (rows x columns) and the target's (row, column) pixel."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        column, row = cutout.wcs().all_world2pix([[ra, dec]], 0)[0]
    rows, columns = cutout.shape
    yy, xx = np.mgrid[0:rows, 0:columns]
    distance = np.hypot(yy - row, xx - column)
    finite = np.isfinite(cutout.flux).all(axis=0)
    aperture = (distance <= aperture_radius) & finite
    background = (distance > background_radius) & finite
    return aperture, background, (float(row), float(column))


def lightcurve_frame(cutout: Cutout, ra: float, dec: float, aperture_radius: float = 2.0,
                     background_radius: float = 3.5, name: str = "") -> pd.DataFrame:
    """The light curve of a cutout: ``mjd, btjd, flux, flux_err, sap_bkg, quality, sector, exptime``.

    Raises
    ------
    ValueError
        If the aperture or the background holds no pixel.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import lightkurve

        aperture, background, _ = apertures(cutout, ra, dec, aperture_radius, background_radius)
        if not aperture.any():
            raise ValueError(f"{name}: sector {cutout.sector}: the aperture ({aperture_radius:g} px) "
                             "holds no pixel with data")
        if not background.any():
            raise ValueError(f"{name}: sector {cutout.sector}: no background pixel beyond "
                             f"{background_radius:g} px in a {cutout.shape[0]} px cutout")
        tpf = lightkurve.TessTargetPixelFile(cutout_hdulist(cutout, name, ra, dec),
                                             quality_bitmask="none")
        summed = tpf.to_lightcurve(aperture_mask=aperture)
        sky = tpf.estimate_background(aperture_mask=background)
    pixels = int(aperture.sum())
    sky_per_pixel = np.asarray(sky.flux.value, float)
    flux = np.asarray(summed.flux.value, float) - sky_per_pixel * pixels
    times = np.asarray(cutout.time, float)
    cadence = float(np.median(np.diff(times))) * 86400.0 if len(times) > 1 else np.nan
    return pd.DataFrame({
        "mjd": times + BTJD_TO_MJD,
        "btjd": times,
        "flux": flux,
        "flux_err": np.asarray(summed.flux_err.value, float),
        "sap_bkg": sky_per_pixel * pixels,
        "quality": np.asarray(cutout.quality, np.int64),
        "sector": np.full(len(times), int(cutout.sector), np.int64),
        "exptime": np.full(len(times), cadence),
    })
