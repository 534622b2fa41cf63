"""Simulator: inject events into light curves to measure how sensitive the search is.

For each source the analysis asks for ``num_injections`` events. Each is drawn
from the configured distributions (:class:`SimulatorParameters`), put into a
copy of the source's quality-checked light curves, and the finders run on the
copy exactly as on the real data. An injected event is *recovered* when a
finder reports a detection that matches it (:meth:`Simulator.match`); that
detection is kept, marked simulated and carrying the injected parameters.
Every injection, recovered or not, is counted in the histograms, so that
recovered over injected is the search's efficiency.

The kinds of event:

- ``transit``: periodic dips, a box or a limb-darkened trapezoid, with the
  duration set by the period, the star's density and the impact parameter;
- ``flare``: fast rise, exponential decay;
- ``dip``: one occultation, Gaussian in time.

An event's strength is given either as its expected S/N (``snr``: the
matched-filter S/N of the injected signal against the light curve's
point-to-point scatter, which fixes its depth or amplitude) or directly as a
depth or amplitude. Draws are seeded by ``seed`` and the source's name, so
every run, serial or parallel, injects the same events.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import model_validator

from skyretriever.analysis.finder import good_epochs
from skyretriever.analysis.series import point_to_point_scatter
from skyretriever.parameters import Parameters, parameter

__all__ = [
    "EVENT_KINDS",
    "DipParameters",
    "Distribution",
    "FlareParameters",
    "InjectedEvent",
    "Simulator",
    "SimulatorParameters",
    "TransitParameters",
    "dip_model",
    "flare_model",
    "transit_model",
]

EVENT_KINDS = ("transit", "flare", "dip")


class Distribution(Parameters):
    """A distribution to draw one parameter from.

    Written in full (``{kind: loguniform, low: 0.5, high: 15}``) or short: a
    number is ``fixed`` at that value, a pair ``[a, b]`` is ``uniform`` between them.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> Distribution.build({"kind": "loguniform", "low": 1, "high": 100}).draw(rng) > 1
    True
    >>> Distribution.model_validate(2.5).draw(rng), Distribution.model_validate([1, 2]).kind
    (2.5, 'uniform')
    """

    kind: Literal["fixed", "uniform", "loguniform", "normal"] = parameter(
        "uniform", "fixed (value), uniform or loguniform (low to high), normal (mean, sigma)."
    )
    value: float = parameter(0.0, "The value of a fixed distribution.")
    low: float = parameter(0.0, "Lower end (uniform, loguniform; normal draws are clipped to it).")
    high: float = parameter(1.0, "Upper end (uniform, loguniform; normal draws are clipped to it).")
    mean: float = parameter(0.0, "Mean of a normal distribution.")
    sigma: float = parameter(1.0, "Standard deviation of a normal distribution.", ge=0)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return {"kind": "fixed", "value": float(data)}
        if isinstance(data, (list, tuple)) and len(data) == 2:
            return {"kind": "uniform", "low": float(data[0]), "high": float(data[1])}
        return data

    @model_validator(mode="after")
    def _check_range(self) -> Distribution:
        if self.kind in ("uniform", "loguniform", "normal") and self.high < self.low:
            raise ValueError(f"{self.kind}: high ({self.high}) is below low ({self.low})")
        if self.kind == "loguniform" and self.low <= 0:
            raise ValueError(f"loguniform: low must be positive, got {self.low}")
        return self

    def draw(self, rng: np.random.Generator) -> float:
        """One value drawn with ``rng``."""
        if self.kind == "fixed":
            return float(self.value)
        if self.kind == "uniform":
            return float(rng.uniform(self.low, self.high))
        if self.kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(self.low), np.log(self.high))))
        return float(np.clip(rng.normal(self.mean, self.sigma), self.low, self.high))


def _distribution(doc: str, **values: Any):
    """A parameter holding a :class:`Distribution`, with its default given by ``values``."""
    return parameter(default_factory=lambda: Distribution(**values), doc=doc)


class TransitParameters(Parameters):
    """Injected transits: what is drawn, and the shape."""

    period: Distribution = _distribution(
        kind="loguniform", low=0.5, high=15.0, doc="Orbital period (days)."
    )
    snr: Distribution | None = _distribution(
        kind="uniform", low=5.0, high=20.0,
        doc="Expected S/N of all transits together; sets the depth (None: draw depth).",
    )
    depth: Distribution = _distribution(
        kind="loguniform", low=1e-4, high=1e-2,
        doc="Depth (fraction of the flux) when snr is None.",
    )
    impact_parameter: Distribution = _distribution(
        kind="uniform", low=0.0, high=0.7, doc="Impact parameter (stellar radii)."
    )
    stellar_density: Distribution = _distribution(
        kind="fixed", value=1.0, doc="Density of the star (solar units); with the period, sets the duration."
    )
    shape: Literal["box", "trapezoid"] = parameter(
        "trapezoid", "box, or a trapezoid with limb darkening across its bottom."
    )
    limb_darkening: list[float] = parameter(
        [0.4, 0.25], "Quadratic limb-darkening coefficients u1, u2 (trapezoid only).",
        min_length=2, max_length=2,
    )


class FlareParameters(Parameters):
    """Injected flares (fast rise, exponential decay)."""

    snr: Distribution | None = _distribution(
        kind="uniform", low=5.0, high=30.0,
        doc="Expected S/N of the flare; sets the amplitude (None: draw amplitude).",
    )
    amplitude: Distribution = _distribution(
        kind="loguniform", low=0.01, high=1.0,
        doc="Peak brightening (fraction of the flux) when snr is None.",
    )
    rise_time: Distribution = _distribution(
        kind="loguniform", low=0.001, high=0.01, doc="Exponential rise time (days)."
    )
    decay_time: Distribution = _distribution(
        kind="loguniform", low=0.01, high=0.3, doc="Exponential decay time (days)."
    )


class DipParameters(Parameters):
    """Injected single dips (occultations), Gaussian in time."""

    snr: Distribution | None = _distribution(
        kind="uniform", low=5.0, high=30.0,
        doc="Expected S/N of the dip; sets the depth (None: draw depth).",
    )
    depth: Distribution = _distribution(
        kind="loguniform", low=1e-3, high=0.3, doc="Depth (fraction of the flux) when snr is None."
    )
    duration: Distribution = _distribution(
        kind="loguniform", low=0.05, high=1.0, doc="Full width at half depth (days)."
    )


class SimulatorParameters(Parameters):
    """What the simulator injects and when an injection counts as recovered."""

    events: dict[str, float] = parameter(
        {"flare": 1.0}, "Relative frequency of each kind of injected event (transit, flare, dip)."
    )
    transit: TransitParameters = parameter(
        default_factory=TransitParameters, doc="Distributions of injected transits."
    )
    flare: FlareParameters = parameter(
        default_factory=FlareParameters, doc="Distributions of injected flares."
    )
    dip: DipParameters = parameter(default_factory=DipParameters, doc="Distributions of injected dips.")
    period_tolerance: float = parameter(
        0.01, "A transit is recovered when the reported period is within this fraction of "
        "the injected one (and the epoch matches).", gt=0,
    )
    time_tolerance: float = parameter(
        0.0, "Margin (days) around an injected flare's or dip's time window for a match.", ge=0
    )
    min_points: int = parameter(
        10, "Fewest good epochs a light curve needs to receive an injection.", ge=1
    )
    seed: int = parameter(0, "Random seed mixed with each source's name.")

    @model_validator(mode="after")
    def _check_events(self) -> SimulatorParameters:
        unknown = [kind for kind in self.events if kind not in EVENT_KINDS]
        if unknown:
            raise ValueError(f"events: unknown kind {unknown[0]!r}; use {', '.join(EVENT_KINDS)}")
        if any(weight < 0 for weight in self.events.values()):
            raise ValueError("events: frequencies must not be negative")
        if not sum(self.events.values()) > 0:
            raise ValueError("events: at least one kind needs a positive frequency")
        return self


# -- models ------------------------------------------------------------------------------
def transit_model(times: np.ndarray, period: float, epoch: float, duration: float,
                  depth: float, ingress: float = 0.0, impact_parameter: float = 0.0,
                  limb_darkening: Sequence[float] | None = None) -> np.ndarray:
    """Relative flux of periodic transits: a box (``ingress=0``) or a trapezoid.

    ``duration`` is first to last contact; ``ingress`` its fraction spent on
    each of ingress and egress. With ``limb_darkening`` (quadratic u1, u2) the
    bottom follows the stellar intensity under the planet, so ``depth`` is
    reached at mid-transit for a central transit and less deep off centre.

    Examples
    --------
    >>> t = np.array([0.0, 0.045, 0.09, 0.5])
    >>> transit_model(t, period=3.0, epoch=0.0, duration=0.2, depth=0.01).round(4).tolist()
    [0.99, 0.99, 0.99, 1.0]
    >>> transit_model(t, 3.0, 0.0, 0.2, 0.01, ingress=0.25).round(4).tolist()
    [0.99, 0.99, 0.998, 1.0]
    """
    phase = np.abs((times - epoch + 0.5 * period) % period - 0.5 * period)
    half = 0.5 * duration
    if ingress > 0:
        profile = np.clip((half - phase) / (ingress * duration), 0.0, 1.0)
    else:
        profile = (phase < half).astype(float)
    if limb_darkening is not None:
        u1, u2 = limb_darkening
        chord = np.clip(phase / half, 0.0, 1.0)
        # projected distance from the disc centre along the transit chord, in stellar radii
        distance = np.sqrt(impact_parameter**2 + (1 - impact_parameter**2) * chord**2)
        mu = np.sqrt(np.clip(1 - distance**2, 0.0, 1.0))
        # relative to the disc centre, where mu = 1 and the intensity is 1
        profile = profile * (1 - u1 * (1 - mu) - u2 * (1 - mu) ** 2)
    return 1.0 - depth * profile


def flare_model(times: np.ndarray, peak_time: float, amplitude: float, rise_time: float,
                decay_time: float) -> np.ndarray:
    """Relative flux of a flare: exponential rise to ``amplitude`` at ``peak_time``, exponential decay.

    Examples
    --------
    >>> flare_model(np.array([-1.0, 0.0, 0.1]), 0.0, 0.5, 0.01, 0.1).round(3).tolist()
    [1.0, 1.5, 1.184]
    """
    offset = times - peak_time
    with np.errstate(over="ignore"):
        shape = np.where(offset < 0, np.exp(np.minimum(offset, 0) / rise_time),
                         np.exp(-np.maximum(offset, 0) / decay_time))
    return 1.0 + amplitude * shape


def dip_model(times: np.ndarray, centre: float, depth: float, duration: float) -> np.ndarray:
    """Relative flux of one Gaussian dip of full width ``duration`` at half depth.

    Examples
    --------
    >>> dip_model(np.array([0.0, 0.25, 5.0]), 0.0, 0.1, 0.5).round(3).tolist()
    [0.9, 0.95, 1.0]
    """
    sigma = duration / (2 * np.sqrt(2 * np.log(2)))
    return 1.0 - depth * np.exp(-0.5 * ((times - centre) / sigma) ** 2)


# -- events ------------------------------------------------------------------------------
@dataclass
class InjectedEvent:
    """One drawn event: its parameters, where it went and how strong it is expected to be.

    ``models`` maps the index of each light curve that received the event to
    the relative flux to multiply it by; ``home`` is the light curve whose
    magnitude, cadence and filter it is counted under in the histograms.
    """

    kind: str
    parameters: dict[str, Any]
    snr: float
    home: int
    time_start: float
    time_end: float
    models: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def record(self) -> dict[str, Any]:
        """The injected parameters as plain values (the ``injected`` column)."""
        return {"kind": self.kind, "expected_snr": self.snr, **self.parameters}


@dataclass
class _Data:
    """The good epochs of one light curve, for drawing and measuring events."""

    times: np.ndarray
    scatter: float
    cadence: float
    band: str


class Simulator:
    """Draw, inject and match events; one simulator serves every source.

    Examples
    --------
    >>> t = np.arange(0.0, 10.0, 0.01)
    >>> rng = np.random.default_rng(4)
    >>> frame = pd.DataFrame({"mjd": t, "flux": 1 + 1e-3 * rng.standard_normal(len(t)),
    ...                       "qflag": np.zeros(len(t), bool)})
    >>> simulator = Simulator(events={"flare": 1.0}, flare={"snr": 25})
    >>> event = simulator.draw([frame], simulator.random_state("star"))
    >>> event.kind, round(event.snr, 1)
    ('flare', 25.0)
    >>> injected = simulator.inject([frame], event)[0]
    >>> bool(injected["flux"].max() > frame["flux"].max()), len(injected) == len(frame)
    (True, True)
    """

    Parameters = SimulatorParameters

    def __init__(self, pars: SimulatorParameters | None = None, **kwargs: Any) -> None:
        if pars is None:
            pars = self.Parameters.build(kwargs, where="analysis.simulator")
        elif kwargs:
            pars = self.Parameters.build(pars.model_dump(), kwargs, where="analysis.simulator")
        self.pars = pars

    def random_state(self, source_name: str) -> np.random.Generator:
        """The generator of one source's injections (the same in every run)."""
        digest = hashlib.sha256(f"{self.pars.seed}:{source_name}".encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    # -- drawing ---------------------------------------------------------------------------
    def draw(self, frames: Sequence[pd.DataFrame], rng: np.random.Generator
             ) -> InjectedEvent | None:
        """Draw one event for these light curves (``None`` if none has enough good epochs)."""
        data = {index: self._data(frame) for index, frame in enumerate(frames)}
        data = {index: d for index, d in data.items() if d is not None}
        if not data:
            return None
        kinds = [kind for kind, weight in self.pars.events.items() if weight > 0]
        weights = np.array([self.pars.events[kind] for kind in kinds], dtype=float)
        kind = kinds[rng.choice(len(kinds), p=weights / weights.sum())]
        if kind == "transit":
            return self._draw_transit(data, rng)
        home = list(data)[rng.integers(len(data))]
        return (self._draw_flare if kind == "flare" else self._draw_dip)(home, data[home], rng)

    def _data(self, frame: pd.DataFrame) -> _Data | None:
        good = good_epochs(frame)
        if good.sum() < max(self.pars.min_points, 3):
            return None
        times = frame["mjd"].to_numpy(dtype=float)[good]
        flux = frame["flux"].to_numpy(dtype=float)[good]
        order = np.argsort(times, kind="stable")
        times, flux = times[order], flux[order]
        median = np.median(flux)
        scatter = point_to_point_scatter(flux / median) if median > 0 else float("nan")
        if not scatter > 0:
            return None
        band = str(frame["filter"].iloc[0]) if "filter" in frame else ""
        return _Data(times, float(scatter), float(np.median(np.diff(times))), band)

    @staticmethod
    def _snr(models: Mapping[int, np.ndarray], data: Mapping[int, _Data]) -> float:
        """Matched-filter S/N of relative-flux models against each light curve's scatter."""
        total = sum(float(np.sum((model - 1.0) ** 2)) / data[i].scatter**2
                    for i, model in models.items())
        return float(np.sqrt(total))

    def _scaled(self, unit: Mapping[int, np.ndarray], data: Mapping[int, _Data],
                strength: Distribution | None, fallback: Distribution, rng: np.random.Generator
                ) -> float:
        """The amplitude of an event whose unit-amplitude models are ``unit``."""
        if strength is None:
            return fallback.draw(rng)
        per_unit = self._snr(unit, data)
        return strength.draw(rng) / per_unit if per_unit > 0 else fallback.draw(rng)

    def _draw_transit(self, data: dict[int, _Data], rng: np.random.Generator) -> InjectedEvent:
        pars = self.pars.transit
        period = pars.period.draw(rng)
        impact = pars.impact_parameter.draw(rng)
        density = pars.stellar_density.draw(rng)
        # a / R* = 4.2 P^(2/3) rho^(1/3) (P in days, rho in solar units); small-angle duration
        scaled_distance = 4.2 * period ** (2 / 3) * density ** (1 / 3)
        duration = period / (np.pi * scaled_distance) * np.sqrt(max(1 - impact**2, 0.01))
        start = min(d.times[0] for d in data.values())
        epoch = start + rng.uniform(0, period)
        limb = pars.limb_darkening if pars.shape == "trapezoid" else None

        def models(depth: float) -> dict[int, np.ndarray]:
            ingress = 0.0
            if pars.shape == "trapezoid":
                ingress = min(0.5, np.sqrt(max(depth, 0.0)) / max(1 - impact**2, 0.05))
            return {i: transit_model(d.times, period, epoch, duration, depth, ingress, impact, limb)
                    for i, d in data.items()}

        # The transit search stitches light curves of one filter: the strongest filter counts.
        groups: dict[str, list[int]] = {}
        for index, d in data.items():
            groups.setdefault(d.band, []).append(index)
        strength = pars.snr.draw(rng) if pars.snr is not None else None
        depth = pars.depth.draw(rng) if strength is None else 1e-3
        for _ in range(2 if strength is not None else 1):  # the ingress depends on the depth
            shapes = models(depth)
            snr_by_group = {band: self._snr({i: shapes[i] for i in members}, data)
                            for band, members in groups.items()}
            best = max(snr_by_group, key=snr_by_group.get)
            if strength is not None and snr_by_group[best] > 0:
                # noisy data may need more than all the light for the S/N asked: the event
                # then records the S/N it really has
                depth = min(depth * strength / snr_by_group[best], 0.99)
        final = models(depth)
        home = groups[best][0]
        end = max(d.times[-1] for d in data.values())
        last = epoch + period * np.floor((end - epoch) / period)
        return InjectedEvent(
            kind="transit",
            parameters={"period": period, "epoch": epoch, "duration": duration, "depth": depth,
                        "impact_parameter": impact, "stellar_density": density,
                        "shape": pars.shape},
            snr=self._snr({i: final[i] for i in groups[best]}, data),
            home=home, time_start=epoch - duration / 2, time_end=last + duration / 2,
            models=final,
        )

    @staticmethod
    def _event_time(d: _Data, rng: np.random.Generator) -> float:
        """A time within the observed stretches: just before a random good epoch."""
        return float(d.times[rng.integers(len(d.times))] - rng.uniform(0, d.cadence))

    def _draw_flare(self, home: int, d: _Data, rng: np.random.Generator) -> InjectedEvent:
        pars = self.pars.flare
        peak, rise, decay = self._event_time(d, rng), pars.rise_time.draw(rng), pars.decay_time.draw(rng)
        unit = {home: flare_model(d.times, peak, 1.0, rise, decay)}
        amplitude = self._scaled(unit, {home: d}, pars.snr, pars.amplitude, rng)
        model = flare_model(d.times, peak, amplitude, rise, decay)
        return InjectedEvent(
            kind="flare",
            parameters={"peak_time": peak, "amplitude": amplitude, "rise_time": rise,
                        "decay_time": decay},
            snr=self._snr({home: model}, {home: d}), home=home,
            time_start=peak - 3 * rise, time_end=peak + 3 * decay, models={home: model},
        )

    def _draw_dip(self, home: int, d: _Data, rng: np.random.Generator) -> InjectedEvent:
        pars = self.pars.dip
        centre, duration = self._event_time(d, rng), pars.duration.draw(rng)
        unit = {home: dip_model(d.times, centre, 1.0, duration)}
        depth = min(self._scaled(unit, {home: d}, pars.snr, pars.depth, rng), 0.99)  # see transits
        model = dip_model(d.times, centre, depth, duration)
        return InjectedEvent(
            kind="dip",
            parameters={"centre": centre, "depth": depth, "duration": duration},
            snr=self._snr({home: model}, {home: d}), home=home,
            time_start=centre - duration, time_end=centre + duration, models={home: model},
        )

    # -- injecting and matching ------------------------------------------------------------
    def inject(self, frames: Sequence[pd.DataFrame], event: InjectedEvent) -> list[pd.DataFrame]:
        """Copies of ``frames`` with the event in their flux and magnitudes; the inputs are untouched.

        The models were evaluated at the good epochs (sorted by time) when the
        event was drawn; flagged epochs are left as they were.
        """
        result = []
        for index, frame in enumerate(frames):
            if index not in event.models:
                result.append(frame)
                continue
            copy = frame.copy()
            good = np.flatnonzero(good_epochs(frame))
            good = good[np.argsort(frame["mjd"].to_numpy(dtype=float)[good], kind="stable")]
            factor = np.ones(len(frame))
            factor[good] = event.models[index]
            copy["flux"] = frame["flux"].to_numpy(dtype=float) * factor
            if "mag" in frame:
                copy["mag"] = frame["mag"].to_numpy(dtype=float) - 2.5 * np.log10(factor)
            result.append(copy)
        return result

    def match(self, event: InjectedEvent, detection: Mapping[str, Any]) -> bool:
        """True when ``detection`` is the finder's report of ``event``."""
        if event.kind == "transit":
            period = detection.get("period")
            if period is None or not np.isfinite(period):
                return False
            injected = event.parameters["period"]
            if abs(period / injected - 1) > self.pars.period_tolerance:
                return False
            epoch = event.parameters["epoch"]
            cycles = np.round((detection["epoch"] - epoch) / injected)
            offset = abs(detection["epoch"] - (epoch + cycles * injected))
            return offset <= max(event.parameters["duration"], detection.get("duration") or 0.0)
        if detection.get("period") is not None:
            return False
        index = detection.get("lightcurve_index")
        if index != event.home or detection.get("sign") != (1 if event.kind == "flare" else -1):
            return False
        margin = self.pars.time_tolerance
        return (detection["time_start"] - margin <= event.time_end
                and detection["time_end"] + margin >= event.time_start)

    def best_match(self, event: InjectedEvent, detections: Sequence[Mapping[str, Any]]
                   ) -> Mapping[str, Any] | None:
        """The highest-scoring detection matching ``event`` (``None`` if it was missed)."""
        matches = [d for d in detections if self.match(event, d)]
        return max(matches, key=lambda d: d["score"]) if matches else None
