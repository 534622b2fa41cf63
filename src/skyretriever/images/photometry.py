"""Aperture photometry of a cutout with lightkurve's target-pixel machinery.

The aperture is a circle of ``aperture_radius`` pixels around the target's
pixel (from the cutout's WCS); the background per pixel is lightkurve's
estimate (``TargetPixelFile.estimate_background``) over the pixels farther than
``background_radius`` from the target, and the aperture's sum less that
background times its pixel count is the flux.

:func:`compare_cadences` says how well an FFI light curve agrees with a
short-cadence (2-minute) one of the same star, binned to the FFI frames.

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

__all__ = ["apertures", "binned_to_frames", "compare_cadences", "lightcurve_frame"]


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


def binned_to_frames(frame_times: np.ndarray, exposure: float, times: np.ndarray,
                     values: np.ndarray) -> np.ndarray:
    """The mean of ``values`` taken within each frame's exposure (``frame_times`` plus or
    minus half ``exposure``, in the same unit); NaN for a frame with none. Non-finite
    values are left out.

    Examples
    --------
    >>> binned_to_frames(np.array([1.0, 2.0, 3.0]), 1.0, np.array([0.6, 0.9, 1.2, 3.1]),
    ...                  np.array([1.0, 2.0, 3.0, 4.0])).tolist()
    [2.0, nan, 4.0]
    """
    keep = np.isfinite(times) & np.isfinite(values)
    order = np.argsort(times[keep], kind="stable")
    times, values = np.asarray(times, float)[keep][order], np.asarray(values, float)[keep][order]
    first = np.searchsorted(times, frame_times - exposure / 2.0, side="left")
    last = np.searchsorted(times, frame_times + exposure / 2.0, side="left")
    sums = np.concatenate([[0.0], np.cumsum(values)])
    counts = last - first
    with np.errstate(divide="ignore", invalid="ignore"):
        means = (sums[last] - sums[first]) / counts
    return np.where(counts > 0, means, np.nan)


def compare_cadences(ffi: pd.DataFrame, short: pd.DataFrame, column: str = "flux"
                     ) -> dict[str, float]:
    """How an FFI light curve agrees with a short-cadence one of the same star and sector.

    The short-cadence points (``mjd``, ``column``, ``qflag``) are averaged over each
    FFI frame's exposure (the median spacing of the FFI times); both series are
    divided by their medians over the frames they share (unflagged, finite), so the
    aperture's share of the star's light and the background do not count.

    Returns
    -------
    dict
        ``frames`` compared; ``median_abs_relative_difference`` (median of
        ``|ffi - binned|`` of the normalised fluxes); ``correlation`` (Pearson's r
        of the two normalised series); ``rms_relative_difference``.
    """
    def good(frame: pd.DataFrame) -> pd.DataFrame:
        flagged = frame["qflag"].to_numpy(bool) if "qflag" in frame else np.zeros(len(frame), bool)
        return frame[~flagged]

    ffi, short = good(ffi), good(short)
    times = ffi["mjd"].to_numpy(float)
    exposure = float(np.median(np.diff(np.sort(times)))) if len(times) > 1 else 0.0
    binned = binned_to_frames(times, exposure, short["mjd"].to_numpy(float),
                              short[column].to_numpy(float))
    values = ffi[column].to_numpy(float)
    shared = np.isfinite(binned) & np.isfinite(values)
    if shared.sum() < 3:
        return {"frames": int(shared.sum()), "median_abs_relative_difference": np.nan,
                "correlation": np.nan, "rms_relative_difference": np.nan}
    a = values[shared] / np.median(values[shared])
    b = binned[shared] / np.median(binned[shared])
    difference = a - b
    return {"frames": int(shared.sum()),
            "median_abs_relative_difference": float(np.median(np.abs(difference))),
            "correlation": float(np.corrcoef(a, b)[0, 1]),
            "rms_relative_difference": float(np.sqrt(np.mean(difference**2)))}
