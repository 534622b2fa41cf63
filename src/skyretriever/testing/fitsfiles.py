"""FITS light-curve files in the exact layouts of TESS SPOC and Kepler/K2, with known signals.

Files have the HDUs, columns, formats, units and header keywords of the
archive's files (``PRIMARY``, ``LIGHTCURVE``, ``APERTURE``; ``TIME`` in BTJD
or BKJD; ``QUALITY`` or ``SAP_QUALITY``), so readers (ours and lightkurve's)
meet what they will meet at MAST. The flux is the star's magnitude turned
into electrons per second with the mission's zero point, with white noise, a
slow trend in ``SAP_FLUX`` only, the star's transit if it has one, some
cadences with quality bits set (one bit in each of the default, hard and
hardest masks) and some with NaN ``TIME`` (and fluxes). The same product
always gives the same bytes.

Examples
--------
>>> from skyretriever.testing import SimulatedSky, SimulatedStar
>>> sky = SimulatedSky([SimulatedStar("a", 10.0, 5.0, tic_id=1, tess_sectors=(1,))])
>>> content = lightcurve_file(sky.files_of("a")[0], sky)
>>> content[:30]
b'SIMPLE  =                    T'
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Protocol

import numpy as np

from skyretriever.observatories.mission_files import (
    BJDREF_KEPLER,
    BJDREF_TESS,
    KEPLER_ZERO_POINT,
    TESS_ZERO_POINT,
)
from skyretriever.testing.stars import Product

__all__ = ["SIMULATED_QUALITY_BITS", "SkyNoise", "expected_flux", "lightcurve_file"]

#: Quality bits the simulator sets: one in the default mask, one only in the hard
#: mask, one only in the hardest mask (so each preset flags more than the last).
SIMULATED_QUALITY_BITS = {"TESS": (32, 1024, 8192), "Kepler": (32, 128, 2048)}
_TESS_CREATOR = "7545 LightCurveExporterPipelineModule"
_KEPLER_CREATOR = "917482 FluxExporter2PipelineModule"


class SkyNoise(Protocol):
    """What a file takes from its sky (a :class:`~skyretriever.testing.sky.SimulatedSky`):
    seeded random draws, and how many cadences are flagged or have NaN ``TIME``."""

    flagged_fraction: float
    nan_time_fraction: float

    def rng(self, *parts: Any) -> np.random.Generator: ...


def expected_flux(magnitude: float, mission: str) -> float:
    """Mean flux (e-/s) of a star of ``magnitude`` in the simulated files of ``mission``."""
    zero_mag, zero_flux = TESS_ZERO_POINT if mission == "TESS" else KEPLER_ZERO_POINT
    return zero_flux * 10 ** (-0.4 * (magnitude - zero_mag))


def _columns(product: Product, sky: SkyNoise) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    star = product.star
    rng = sky.rng("fits", product.data_uri)
    timedel = product.cadence / 86400.0
    count = max(int(product.days / timedel), 2)
    time = product.start + (np.arange(count) + 0.5) * timedel
    reference = BJDREF_TESS if product.is_tess else BJDREF_KEPLER
    magnitude = star.tmag if product.is_tess else star.kepler_magnitude
    mean = expected_flux(magnitude, "TESS" if product.is_tess else "Kepler")
    relative_noise = 1.0 / np.sqrt(mean * product.cadence * 0.8) + 5e-5
    model = np.ones(count)
    if star.transit is not None:
        model[star.transit.in_transit(time + reference)] -= star.transit.depth
    pdcsap = mean * (model + relative_noise * rng.standard_normal(count))
    pdcsap_err = np.full(count, mean * relative_noise)
    crowding, flux_fraction = 0.99, 0.93
    trend = 1.0 + 0.002 * np.sin(2 * np.pi * (time - time[0]) / max(product.days, 1.0))
    sap = (pdcsap * flux_fraction + (1 - crowding) * mean) * trend
    background = 150.0 + 5.0 * rng.standard_normal(count)

    quality = np.zeros(count, dtype=np.int32)
    bits = SIMULATED_QUALITY_BITS["TESS" if product.is_tess else "Kepler"]
    flagged = rng.random(count) < sky.flagged_fraction
    quality[flagged] = np.asarray(bits, dtype=np.int32)[rng.integers(0, len(bits), flagged.sum())]
    nan_time = rng.random(count) < sky.nan_time_fraction
    if count > len(bits) + 1:
        # However short the file, each quality bit and a NaN time appear at least once.
        chosen = rng.choice(count, size=len(bits) + 1, replace=False)
        quality[chosen[:-1]] = bits
        nan_time[chosen[-1]] = True
    time = np.where(nan_time, np.nan, time)
    for values in (pdcsap, pdcsap_err, sap):
        values[nan_time] = np.nan

    column0, row0 = rng.uniform(100, 2000), rng.uniform(100, 2000)
    columns = {
        "TIME": time,
        "TIMECORR": np.full(count, 0.0021, dtype=np.float32),
        "CADENCENO": np.arange(count, dtype=np.int32) + 100_000 + product.sequence * 20_000,
        "SAP_FLUX": sap.astype(np.float32),
        "SAP_FLUX_ERR": (pdcsap_err * 1.02).astype(np.float32),
        "SAP_BKG": background.astype(np.float32),
        "SAP_BKG_ERR": np.full(count, 2.0, dtype=np.float32),
        "PDCSAP_FLUX": pdcsap.astype(np.float32),
        "PDCSAP_FLUX_ERR": pdcsap_err.astype(np.float32),
        "QUALITY": quality,
        "PSF_CENTR1": np.full(count, np.nan),
        "PSF_CENTR1_ERR": np.full(count, np.nan, dtype=np.float32),
        "PSF_CENTR2": np.full(count, np.nan),
        "PSF_CENTR2_ERR": np.full(count, np.nan, dtype=np.float32),
        "MOM_CENTR1": column0 + 0.01 * rng.standard_normal(count),
        "MOM_CENTR1_ERR": np.full(count, 0.001, dtype=np.float32),
        "MOM_CENTR2": row0 + 0.01 * rng.standard_normal(count),
        "MOM_CENTR2_ERR": np.full(count, 0.001, dtype=np.float32),
        "POS_CORR1": (0.005 * rng.standard_normal(count)).astype(np.float32),
        "POS_CORR2": (0.005 * rng.standard_normal(count)).astype(np.float32),
    }
    if not product.is_tess:
        columns = {("SAP_QUALITY" if name == "QUALITY" else name): values
                   for name, values in columns.items()}
    finite = np.isfinite(time)
    facts = {"timedel": timedel, "tstart": float(np.min(time[finite])) - timedel / 2,
             "tstop": float(np.max(time[finite])) + timedel / 2, "crowdsap": crowding,
             "flfrcsap": flux_fraction, "reference": reference, "column": column0, "row": row0,
             "cdpp": float(relative_noise * 1e6)}
    return columns, facts


_FORMATS = {"TIME": "D", "CADENCENO": "J", "QUALITY": "J", "SAP_QUALITY": "J",
            "PSF_CENTR1": "D", "PSF_CENTR2": "D", "MOM_CENTR1": "D", "MOM_CENTR2": "D"}
_UNITS = {"TIMECORR": "d", "SAP_FLUX": "e-/s", "SAP_FLUX_ERR": "e-/s", "SAP_BKG": "e-/s",
          "SAP_BKG_ERR": "e-/s", "PDCSAP_FLUX": "e-/s", "PDCSAP_FLUX_ERR": "e-/s",
          "PSF_CENTR1": "pixel", "PSF_CENTR1_ERR": "pixel", "PSF_CENTR2": "pixel",
          "PSF_CENTR2_ERR": "pixel", "MOM_CENTR1": "pixel", "MOM_CENTR1_ERR": "pixel",
          "MOM_CENTR2": "pixel", "MOM_CENTR2_ERR": "pixel", "POS_CORR1": "pixels",
          "POS_CORR2": "pixels"}


def _primary_header(product: Product) -> list[tuple[str, Any, str]]:
    star = product.star
    common_end = [
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("RA_OBJ", float(star.ra), "[deg] right ascension"),
        ("DEC_OBJ", float(star.dec), "[deg] declination"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
        ("PMRA", float(star.pmra) / 1000.0, "[arcsec/yr] RA proper motion"),
        ("PMDEC", float(star.pmdec) / 1000.0, "[arcsec/yr] Dec proper motion"),
        ("PMTOTAL", float(np.hypot(star.pmra, star.pmdec)) / 1000.0,
         "[arcsec/yr] total proper motion"),
    ]
    if product.is_tess:
        return [
            ("NEXTEND", 2, "number of standard extensions"),
            ("EXTNAME", "PRIMARY", "name of extension"),
            ("EXTVER", 1, "extension version number (not format version)"),
            ("SIMDATA", False, "file is based on simulated data"),
            ("ORIGIN", "NASA/Ames", "institution responsible for creating this file"),
            ("DATE", "2019-02-06", "file creation date."),
            ("CREATOR", _TESS_CREATOR, "pipeline job and program used to produce this file"),
            ("PROCVER", "spoc-3.3.51-20181221", "SW version"),
            ("FILEVER", "1.0", "file format version"),
            ("TIMVERSN", "OGIP/93-003", "OGIP memo number for file format"),
            ("TELESCOP", "TESS", "telescope"),
            ("INSTRUME", "TESS Photometer", "detector type"),
            ("DATA_REL", 3, "data release version number"),
            ("OBJECT", f"TIC {star.tic_id}", "string version of target id"),
            ("TICID", int(star.tic_id), "unique tess target identifier"),
            ("SECTOR", int(product.sequence), "Observing sector"),
            ("CAMERA", 1 + product.sequence % 4, "Camera number"),
            ("CCD", 1 + int(star.tic_id) % 4, "CCD chip number"),
            ("PXTABLE", 129, "pixel table id"),
            *common_end,
            ("TESSMAG", float(star.tmag), "[mag] TESS magnitude"),
            ("TEFF", float(star.teff), "[K] Effective temperature"),
            ("LOGG", float(star.logg), "[cm/s2] log10 surface gravity"),
            ("MH", 0.0, "[log10([M/H])] metallicity"),
            ("RADIUS", float(star.radius), "[solar radii] stellar radius"),
            ("TICVER", 7, "TICVER"),
            ("CRMITEN", True, "spacecraft cosmic ray mitigation enabled"),
            ("CRBLKSZ", 10, "[exposures] s/c cosmic ray mitigation block siz"),
            ("CRSPOC", False, "SPOC cosmic ray cleaning enabled"),
        ]
    k2 = product.mission == "K2"
    identifier = star.epic_id if k2 else star.kic_id
    cards = [
        ("NEXTEND", 2, "number of standard extensions"),
        ("EXTNAME", "PRIMARY", "name of extension"),
        ("EXTVER", 1, "extension version number (not format version)"),
        ("ORIGIN", "NASA/Ames", "institution responsible for creating this file"),
        ("DATE", "2015-09-24", "file creation date."),
        ("CREATOR", _KEPLER_CREATOR, "pipeline job and program used to produce this file"),
        ("PROCVER", "svn+ssh://murzim/repo/soc/tags/release/9.3.22 r60269", "SW version"),
        ("FILEVER", "6.1", "file format version"),
        ("TIMVERSN", "OGIP/93-003", "OGIP memo number for file format"),
        ("TELESCOP", "Kepler", "telescope"),
        ("INSTRUME", "Kepler Photometer", "detector type"),
        ("OBJECT", f"{'EPIC' if k2 else 'KIC'} {identifier}", "string version of target id"),
        ("KEPLERID", int(identifier), "unique Kepler target identifier"),
        ("CHANNEL", 1 + int(identifier) % 84, "CCD channel"),
        ("MODULE", 2 + int(identifier) % 22, "CCD module"),
        ("OUTPUT", 1 + int(identifier) % 4, "CCD output"),
        ("CAMPAIGN" if k2 else "QUARTER", int(product.sequence),
         "Observing campaign number" if k2 else "Observing quarter"),
        ("DATA_REL", 25, "data release version number"),
        ("OBSMODE", "long cadence", "observing mode"),
        ("MISSION", "K2" if k2 else "Kepler", "Mission name"),
        ("TTABLEID", 31, "target table id"),
        *common_end,
        ("KEPMAG", float(star.kepler_magnitude), "[mag] Kepler magnitude (Kp)"),
        ("TEFF", int(star.teff), "[K] Effective temperature"),
        ("LOGG", float(star.logg), "[cm/s2] log10 surface gravity"),
        ("FEH", 0.0, "[log10([Fe/H])]  metallicity"),
        ("RADIUS", float(star.radius), "[solar radii] stellar radius"),
    ]
    return cards


def _lightcurve_header(product: Product, facts: dict[str, Any]) -> list[tuple[str, Any, str]]:
    star = product.star
    telescope = "TESS" if product.is_tess else "Kepler"
    identifier = (star.tic_id if product.is_tess
                  else star.epic_id if product.mission == "K2" else star.kic_id)
    prefix = "TIC" if product.is_tess else "EPIC" if product.mission == "K2" else "KIC"
    elapsed = facts["tstop"] - facts["tstart"]
    return [
        ("EXTNAME", "LIGHTCURVE", "name of extension"),
        ("EXTVER", 1, "extension version number (not format version)"),
        ("TELESCOP", telescope, "telescope"),
        ("INSTRUME", f"{telescope} Photometer", "detector type"),
        ("OBJECT", f"{prefix} {identifier}", "string version of target id"),
        ("TICID" if product.is_tess else "KEPLERID", int(identifier), "unique target identifier"),
        ("RADESYS", "ICRS", "reference frame of celestial coordinates"),
        ("RA_OBJ", float(star.ra), "[deg] right ascension"),
        ("DEC_OBJ", float(star.dec), "[deg] declination"),
        ("EQUINOX", 2000.0, "equinox of celestial coordinate system"),
        ("EXPOSURE", elapsed * 0.8, "[d] time on source"),
        ("TIMEREF", "SOLARSYSTEM", "barycentric correction applied to times"),
        ("TASSIGN", "SPACECRAFT", "where time is assigned"),
        ("TIMESYS", "TDB", "time system is Barycentric Dynamical Time (TDB)"),
        ("BJDREFI", int(facts["reference"]), "integer part of BTJD reference date"),
        ("BJDREFF", 0.0, "fraction of the day in BTJD reference date"),
        ("TIMEUNIT", "d", "time unit for TIME, TSTART and TSTOP"),
        ("TELAPSE", elapsed, "[d] TSTOP - TSTART"),
        ("LIVETIME", elapsed * 0.8, "[d] TELAPSE multiplied by DEADC"),
        ("TSTART", facts["tstart"], "observation start time in BTJD"),
        ("TSTOP", facts["tstop"], "observation stop time in BTJD"),
        ("DEADC", 0.8, "deadtime correction"),
        ("TIMEPIXR", 0.5, "bin time beginning=0 middle=0.5 end=1"),
        ("TIERRELA", 1.16e-05, "[d] relative time error"),
        ("INT_TIME", 1.98, "[s] photon accumulation time per frame"),
        ("TIMEDEL", facts["timedel"], "[d] time resolution of data"),
        ("BACKAPP", True, "background is subtracted"),
        ("DEADAPP", True, "deadtime applied"),
        ("VIGNAPP", True, "vignetting or collimator correction applied"),
        ("CDPP0_5", facts["cdpp"] * 1.4, "[ppm] RMS CDPP on 0.5-hr time scales"),
        ("CDPP1_0", facts["cdpp"], "[ppm] RMS CDPP on 1.0-hr time scales"),
        ("CDPP2_0", facts["cdpp"] * 0.7, "[ppm] RMS CDPP on 2.0-hr time scales"),
        ("CROWDSAP", facts["crowdsap"], "Ratio of target flux to total flux in op. ap."),
        ("FLFRCSAP", facts["flfrcsap"], "Frac. of target flux w/in the op. aperture"),
        ("PDCVAR", 0.4, "Target variability"),
        ("PDCMETHD", "msMap", "PDC algorithm used for target"),
        ("NUMBAND", 3, "Number of scale bands"),
    ]


def lightcurve_file(product: Product, sky: SkyNoise) -> bytes:
    """The bytes of one product's FITS file (TESS SPOC or Kepler/K2 layout)."""
    from astropy.io import fits

    columns, facts = _columns(product, sky)
    primary = fits.PrimaryHDU()
    for key, value, comment in _primary_header(product):
        primary.header[key] = (value, comment)
    fits_columns = []
    for name, values in columns.items():
        form = _FORMATS.get(name, "E")
        unit = _UNITS.get(name)
        if name == "TIME":
            unit = f"BJD - {int(facts['reference'])}, days"
        fits_columns.append(fits.Column(name=name, format=form, unit=unit, array=values))
    table = fits.BinTableHDU.from_columns(fits_columns)
    for key, value, comment in _lightcurve_header(product, facts):
        table.header[key] = (value, comment)
    aperture = fits.ImageHDU(data=np.full((11, 11), 1, dtype=np.int32), name="APERTURE")
    aperture.data[3:8, 3:8] = 3  # pixels in the optimal aperture (bit 2) and collected (bit 1)
    aperture.header["TELESCOP"] = ("TESS" if product.is_tess else "Kepler", "telescope")
    aperture.header["CROWDSAP"] = (facts["crowdsap"], "Ratio of target flux to total flux in op. ap.")
    aperture.header["FLFRCSAP"] = (facts["flfrcsap"], "Frac. of target flux w/in the op. aperture")
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy warns about the non-standard unit e-/s
        fits.HDUList([primary, table, aperture]).writeto(buffer, checksum=True)
    return buffer.getvalue()
