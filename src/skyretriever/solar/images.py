"""AIA cutouts to PNG images and movies, with the exact map from image pixels to the Sun.

Each FITS frame becomes a PNG (the AIA colour map of its wavelength from
sunpy, asinh or log scaling from astropy.visualization) that is the FITS image
itself, flipped to put solar north up and, if it is larger than ``max_size``
pixels, binned by a whole factor: there is no axis, margin or resampling, so
the plot area is the whole image. :class:`ImageMapping` records what maps the
image's pixels to the FITS pixels (image size, binning, the flip: the plot
area's box ``im_ll_x, im_ll_y, im_ur_x, im_ur_y``) and to helioprojective
coordinates (the FITS header's WCS and observer cards), and is stored as JSON
beside the images, so the mapping can be redone exactly. One animated PNG per
event and wavelength is the movie. Every image must stay under 1 MiB (the
Zooniverse limit).

Examples
--------
>>> mapping = ImageMapping(png_width=100, png_height=80, binning=2, fits_width=200,
...                        fits_height=160, header={})
>>> [float(v) for v in mapping.to_fits(0.0, 79.0)]
[0.5, 0.5]
>>> [float(v) for v in mapping.from_fits(0.5, 0.5)]
[0.0, 79.0]
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.visualization import AsinhStretch, LogStretch, PercentileInterval
from astropy.wcs import WCS, FITSFixedWarning

from skyretriever import storage

__all__ = ["MAX_IMAGE_BYTES", "WCS_CARDS", "ImageMapping", "draw_box", "render_event",
           "render_frame"]

#: Zooniverse refuses subject files larger than this.
MAX_IMAGE_BYTES = 1024 * 1024
#: The header cards that place a pixel on the Sun (kept with every image).
WCS_CARDS = ("NAXIS1", "NAXIS2", "CTYPE1", "CTYPE2", "CUNIT1", "CUNIT2", "CRPIX1", "CRPIX2",
             "CRVAL1", "CRVAL2", "CDELT1", "CDELT2", "PC1_1", "PC1_2", "PC2_1", "PC2_2",
             "CROTA2", "DATE-OBS", "MJD-OBS", "HGLN_OBS", "HGLT_OBS", "DSUN_OBS", "HAEX_OBS",
             "HAEY_OBS", "HAEZ_OBS", "RSUN_REF", "WAVELNTH", "T_OBS")


@dataclass(frozen=True)
class ImageMapping:
    """How one image's pixels map to its FITS pixels and to helioprojective arcsec.

    Image pixels are (x right, y down) with pixel centres at whole numbers, as
    in the PNG; FITS pixels are 0-based (x, y up), as astropy's WCS takes them.
    """

    png_width: int
    png_height: int
    binning: int
    fits_width: int
    fits_height: int
    header: dict[str, Any] = field(default_factory=dict)

    @property
    def plot_box(self) -> tuple[float, float, float, float]:
        """``(im_ll_x, im_ll_y, im_ur_x, im_ur_y)``: the plot area's corners in image pixels."""
        return (-0.5, self.png_height - 0.5, self.png_width - 0.5, -0.5)

    def to_fits(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Image pixel (x right, y down) to FITS pixel (0-based, y up)."""
        ll_x, ll_y, ur_x, ur_y = self.plot_box
        scale_x = self.fits_width / (ur_x - ll_x)
        scale_y = self.fits_height / (ll_y - ur_y)
        return ((np.asarray(x) - ll_x) * scale_x - 0.5, (ll_y - np.asarray(y)) * scale_y - 0.5)

    def from_fits(self, x: Any, y: Any) -> tuple[Any, Any]:
        """FITS pixel to image pixel (the inverse of :meth:`to_fits`)."""
        ll_x, ll_y, ur_x, ur_y = self.plot_box
        scale_x = self.fits_width / (ur_x - ll_x)
        scale_y = self.fits_height / (ll_y - ur_y)
        return ((np.asarray(x) + 0.5) / scale_x + ll_x, ll_y - (np.asarray(y) + 0.5) / scale_y)

    def wcs(self) -> WCS:
        """The FITS image's WCS, rebuilt from the stored cards."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            return WCS(fits.Header(self.header))

    def to_world(self, x: Any, y: Any) -> tuple[Any, Any]:
        """Image pixel to helioprojective (Tx, Ty) in arcsec."""
        lon, lat = self.wcs().pixel_to_world_values(*self.to_fits(x, y))
        return np.asarray(lon) * 3600.0, np.asarray(lat) * 3600.0

    def from_world(self, tx: Any, ty: Any) -> tuple[Any, Any]:
        """Helioprojective (Tx, Ty) in arcsec to image pixel."""
        fx, fy = self.wcs().world_to_pixel_values(np.asarray(tx) / 3600.0,
                                                  np.asarray(ty) / 3600.0)
        return self.from_fits(fx, fy)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "plot_box": list(self.plot_box)}

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ImageMapping:
        return cls(**{k: values[k] for k in ("png_width", "png_height", "binning", "fits_width",
                                             "fits_height", "header")})


def _colormap(wavelength: int):
    import matplotlib
    import sunpy.visualization.colormaps  # noqa: F401  (registers the sdoaia colour maps)

    name = f"sdoaia{int(wavelength)}"
    return matplotlib.colormaps[name] if name in matplotlib.colormaps else (
        matplotlib.colormaps["gray"])


def _rgb(data: np.ndarray, wavelength: int, scaling: str) -> np.ndarray:
    interval = PercentileInterval(99.5)
    stretch = AsinhStretch(0.1) if scaling == "asinh" else LogStretch(1000)
    finite = np.where(np.isfinite(data), data, np.nanmin(data))
    scaled = stretch(interval(finite))
    colours = _colormap(wavelength)(np.clip(scaled, 0, 1))
    return (colours[..., :3] * 255).round().astype(np.uint8)


def render_frame(fits_path: str | Path, png_path: str | Path, *, scaling: str = "asinh",
                 max_size: int = 1024) -> ImageMapping:
    """Write one FITS frame as a PNG (atomically); returns its :class:`ImageMapping`.

    Raises
    ------
    ValueError
        If the PNG would be larger than 1 MiB, or the FITS has no 2-D image.
    """
    from PIL import Image

    with fits.open(fits_path) as hdul:
        hdu = next((h for h in hdul if h.data is not None and h.data.ndim == 2), None)
        if hdu is None:
            raise ValueError(f"{fits_path}: no 2-D image")
        data, header = np.asarray(hdu.data, dtype=float), hdu.header
    height, width = data.shape
    binning = max(1, int(np.ceil(max(width, height) / max_size)))
    cut_h, cut_w = height - height % binning, width - width % binning
    binned = data[:cut_h, :cut_w].reshape(cut_h // binning, binning, cut_w // binning,
                                          binning).mean(axis=(1, 3))
    rgb = _rgb(binned, int(header.get("WAVELNTH", 0)), scaling)[::-1]  # solar north up
    with storage.atomic_write(png_path) as temporary:
        Image.fromarray(rgb).save(temporary, format="PNG", optimize=True)
        size = Path(temporary).stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ValueError(f"{png_path}: {size} bytes, over the 1 MiB Zooniverse limit; "
                             "lower max_size")
    cards = {key: header[key] for key in WCS_CARDS if key in header}
    return ImageMapping(png_width=rgb.shape[1], png_height=rgb.shape[0], binning=binning,
                        fits_width=cut_w, fits_height=cut_h, header=cards)


def render_event(frames: list[tuple[str, int, str]], folder: str | Path, *,
                 scaling: str = "asinh", max_size: int = 1024, movie: bool = True,
                 frame_duration_ms: int = 200) -> list[dict[str, Any]]:
    """Images (and one movie per wavelength) of an event's frames, with their mappings.

    ``frames`` are ``(fits path, wavelength, time)`` in time order. Writes
    ``<wavelength>/<number>.png``, ``movie_<wavelength>.png`` (animated) and
    ``images.json`` (every image's file, FITS file, time and mapping) into
    ``folder``; returns the ``images.json`` entries.
    """
    from PIL import Image

    folder = Path(folder)
    entries: list[dict[str, Any]] = []
    by_wave: dict[int, list[Path]] = {}
    for number, (fits_path, wavelength, time) in enumerate(frames):
        png = folder / str(wavelength) / f"{number:04d}.png"
        mapping = render_frame(fits_path, png, scaling=scaling, max_size=max_size)
        entries.append({"image": str(png.relative_to(folder)), "fits": Path(fits_path).name,
                        "wavelength": int(wavelength), "time": time, "mapping": mapping.to_json()})
        by_wave.setdefault(int(wavelength), []).append(png)
    if movie:
        for wavelength, pngs in by_wave.items():
            pictures = [Image.open(p).convert("RGB") for p in pngs]
            with storage.atomic_write(folder / f"movie_{wavelength}.png") as temporary:
                pictures[0].save(temporary, format="PNG", save_all=True,
                                 append_images=pictures[1:], duration=frame_duration_ms, loop=0)
            for picture in pictures:
                picture.close()
    with storage.atomic_write(folder / "images.json") as temporary:
        Path(temporary).write_text(json.dumps(entries, indent=1, default=str), encoding="utf-8")
    return entries


def draw_box(png_path: str | Path, corners: Any, target: str | Path, *, zoom: int = 2,
             colour: tuple[int, int, int] = (0, 255, 255)) -> None:
    """Write the image ``png_path`` with the polygon ``corners`` (image pixels) drawn on it.

    The image is enlarged ``zoom`` times (each pixel a block) so a thin box stays visible;
    ``corners`` are (x right, y down) pixel coordinates of the original image.

    Examples
    --------
    >>> import tempfile
    >>> from PIL import Image
    >>> folder = Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (20, 10)).save(folder / "frame.png")
    >>> draw_box(folder / "frame.png", [(2, 2), (12, 2), (12, 7), (2, 7)], folder / "box.png")
    >>> with Image.open(folder / "box.png") as image:
    ...     image.size, image.getpixel((4, 4)), image.getpixel((0, 0))
    ((40, 20), (0, 255, 255), (0, 0, 0))
    """
    from PIL import Image, ImageDraw

    with Image.open(png_path) as image:
        picture = image.convert("RGB").resize((image.width * zoom, image.height * zoom),
                                              Image.Resampling.NEAREST)
    points = [((float(x) + 0.5) * zoom - 0.5, (float(y) + 0.5) * zoom - 0.5)
              for x, y in np.asarray(corners, dtype=float)]
    ImageDraw.Draw(picture).polygon(points, outline=colour, width=max(1, zoom))
    with storage.atomic_write(target, beside=True) as temporary:
        picture.save(temporary, format="PNG")
