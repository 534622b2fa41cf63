"""The analysis as a whole: rows it returns, configuration of finders, extensions, database runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
import yaml

from skyretriever import Project
from skyretriever.analysis import Analysis, Finder, Histogram, TransitFinder
from skyretriever.analysis.analysis import DETECTION_COLUMNS, PROPERTIES_COLUMNS
from skyretriever.analysis.simulator import transit_model
from skyretriever.analysis.synthetic import as_lightcurve, sector_lightcurve, signal_times
from skyretriever.database import Session
from skyretriever.models import Detection, Properties, Source
from skyretriever.parameters import ParameterError

ROOT = Path(__file__).resolve().parents[1]
DENSE_DEMO = {"num_seasons": 1, "num_points": 2000, "season_length": 27.0, "filters": ["r"],
              "exptime": 600.0, "flare_fraction": 0.0}


def _sectors(count: int = 2, seed: int = 0, signal: bool = True) -> list:
    rng = np.random.default_rng(seed)
    lightcurves = []
    for number in range(count):
        start = 58325.3 + 27.5 * number
        times = signal_times(start=start, cadence_minutes=10.0)
        transit = transit_model(times, 4.1, 58326.0, 0.12, 0.004) if signal else None
        frame = sector_lightcurve(rng, start=start, cadence_minutes=10.0, variability_ppm=3000,
                                  rotation_period=3.7, signal=transit)
        lightcurves.append(as_lightcurve(frame, series_number=number + 1))
    return lightcurves


def test_analysis_returns_full_rows_and_real_properties():
    lightcurves = _sectors()
    analysis = Analysis(finders=["peak", "transit"])
    result = analysis.analyze_photometry(lightcurves, {"name": "star", "mag": 10.0})
    properties = result.properties
    assert set(properties) == set(PROPERTIES_COLUMNS)
    assert properties["num_lightcurves"] == 2 and properties["has_data"]
    assert properties["num_points"] == sum(lc.num_points for lc in lightcurves)
    assert properties["time_span"] == pytest.approx(54.5, abs=0.1)
    assert properties["flux_rms_ppm"] == pytest.approx(np.sqrt(1000**2 + 3000**2 / 2), rel=0.25)
    assert properties["ls_period"] == pytest.approx(3.7, rel=0.01)    # the spots
    assert properties["ls_false_alarm"] < 1e-10
    assert properties["transit_period"] == pytest.approx(4.1, rel=1e-3)
    assert properties["transit_depth"] == pytest.approx(0.004, rel=0.2)
    assert properties["num_injected"] == properties["num_recovered"] == 0
    transits = [d for d in result.detections if d["finder"] == "transit"]
    assert len(transits) == 1
    for detection in result.detections:
        assert set(detection) == {*DETECTION_COLUMNS, "lightcurve_index"}
    transit = transits[0]
    assert transit["lightcurve_index"] is None                        # found in both sectors
    assert transit["observatory"] == "tess" and transit["filter"] == "TESS"
    # every 4.1 days from 58326.0 to 58379.3: 14 transits, one half in the second sector's gap
    assert transit["extra"]["num_transits"] == 14 and transit["is_simulated"] is False
    assert properties["num_detections"] == len(result.detections)
    assert set(analysis.timings) == {"quality", "peak", "transit", "properties"}
    histogram = Histogram(analysis.pars.histogram)
    histogram.add(result.histogram)
    assert histogram.total("lightcurves") == 2
    assert histogram.total("points") == histogram.total("scores") == properties["num_good_points"]
    detections = histogram.to_xarray()["detections"]
    assert int(detections.sel(score=slice(None, 0)).sum()) == 1        # the transit: a dip
    assert int(detections.sum()) == len(result.detections)


def test_a_transit_search_alone_still_counts_the_epochs_it_scanned():
    analysis = Analysis(finders=["transit"])
    result = analysis.analyze_photometry(_sectors(1, signal=False), {"name": "star"})
    histogram = Histogram(analysis.pars.histogram)
    histogram.add(result.histogram)
    assert histogram.total("points") == result.properties["num_good_points"] > 3000
    assert histogram.total("scores") == 0 and result.properties["best_snr"] is None


def test_a_source_without_data_gets_a_row_of_nothing():
    result = Analysis(finders=["peak", "transit"], num_injections=3,
                      simulator={"events": {"transit": 1}}).analyze_photometry([], {"name": "x"})
    assert result.detections == [] and result.histogram == {}
    assert result.properties["has_data"] is False and result.properties["num_injected"] == 0
    assert result.properties["transit_period"] is None and result.properties["ls_period"] is None


def test_finders_are_configured_by_their_sections():
    analysis = Analysis.Parameters.build({
        "finders": ["peak", "transit"],
        "finder": {"snr_threshold": 8.0},                           # every finder
        "transit": {"min_transits": 2, "detrend": "spline"},
        "peak": {"find_dips": True},
    })
    finders = Analysis(analysis).finders
    assert [type(f) for f in finders] == [Finder, TransitFinder]
    assert finders[0].pars.snr_threshold == finders[1].pars.snr_threshold == 8.0
    assert finders[0].pars.find_dips and finders[1].pars.min_transits == 2
    resolved = Analysis(analysis).resolved_parameters()
    assert resolved["transit"]["detrend"] == "spline" and resolved["peak"]["find_dips"]
    with pytest.raises(ParameterError, match=r"analysis\.finder \(given to every finder; the "
                       r"transit finder .*'find_dips'.*put it under analysis\.peak\)"):
        Analysis(finders=["peak", "transit"], finder={"find_dips": True})
    with pytest.raises(ParameterError, match="did you mean 'transit'"):
        Analysis(finders=["peak", "transt"])


@pytest.mark.parametrize("section", ["dimming", "DimmingFinder", "extensions.dimming:DimmingFinder"])
def test_a_finder_from_an_extension_is_configured_under_its_name(section):
    analysis = Analysis(finders=["peak", "extensions.dimming:DimmingFinder"],
                        **{section: {"bin_days": 3.0}})
    dimming = analysis.finders[1]
    assert dimming.name == "dimming" and dimming.pars.bin_days == 3.0
    assert analysis.resolved_parameters()["dimming"]["bin_days"] == 3.0


def test_unknown_extension_finders_say_why():
    with pytest.raises(ParameterError, match="cannot import 'extensions.nothing'"):
        Analysis(finders=["extensions.nothing:Finder"])
    with pytest.raises(ParameterError, match="is not a Finder subclass"):
        Analysis(finders=["skyretriever.analysis:Histogram"])


# -- with the database -------------------------------------------------------------------------
def test_a_run_writes_transits_and_injections_to_queryable_columns(project_factory):
    project = project_factory(
        "transit_run", catalog_kwargs={"default": "test", "num_sources": 6}, demo=DENSE_DEMO,
        analysis_kwargs={"finders": ["peak", "transit"], "num_injections": 2,
                         "simulator": {"events": {"transit": 1.0},
                                       "transit": {"snr": 40, "period": [1, 4]}}},
    )
    summary = project.run()
    assert summary.counts["failed"] == 0
    with Session() as session:
        rows = session.scalars(sa.select(Properties).join(Source).where(Properties.has_data)).all()
        assert rows and all(p.num_injected == 2 and p.transit_period is not None
                            and p.ls_period is not None for p in rows)
        found = session.scalars(sa.select(Detection).where(
            Detection.is_simulated, Detection.period.between(1, 4))).all()
        assert len(found) == sum(p.num_recovered for p in rows) >= len(rows)  # S/N 40: most
        for detection in found:
            assert detection.finder == "transit" and detection.sde > 0
            assert detection.injected["kind"] == "transit"
            assert detection.period == pytest.approx(detection.injected["period"], rel=0.01)
            assert detection.lightcurve.source_id == detection.source_id
        assert session.scalar(sa.select(sa.func.count(Detection.id)).where(
            ~Detection.is_simulated, Detection.finder == "transit")) == 0


def test_migration_0002_gives_the_models_schema(database_url):
    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from skyretriever import database
    from skyretriever.models import Base

    def differences() -> list:
        with database.get_engine().connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "compare_server_default": True})
            return compare_metadata(context, Base.metadata)

    assert database.current_revision() == database.head_revision()
    assert differences() == []
    with database.get_engine().begin() as connection:
        command.downgrade(database._alembic_config(connection), "0001")
    assert database.current_revision() == "0001"
    assert {"period", "transit_snr"} & {d[3].name for d in differences() if d[0] == "add_column"}
    database.upgrade()
    assert differences() == []


def test_the_extensions_load_from_the_yaml_configuration(database_url, data_root, monkeypatch):
    monkeypatch.chdir(ROOT)                                  # the configuration names extensions.*
    project = Project(cfg_file="configs/extension_demo.yaml", database_url=database_url,
                      data_root=str(data_root), progress=False,
                      catalog_kwargs={"num_sources": 12}, execution_kwargs={"scheduler": "serial"})
    assert type(project.analysis).__name__ == "FlareRateAnalysis"
    assert project.analysis.pars.rate_snr == 7.0
    assert [finder.name for finder in project.analysis.finders] == ["peak", "dimming"]
    assert project.analysis.finders[1].pars.bin_days == 5.0
    summary = project.run()
    assert summary.counts["failed"] == 0
    config = yaml.safe_load((project.output_folder / "config.yaml").read_text())
    assert config["analysis"]["rate_snr"] == 7.0 and config["analysis"]["dimming"]["bin_days"] == 5.0
    with Session() as session:
        rows = session.scalars(sa.select(Properties).where(Properties.has_data)).all()
    assert rows and all("flare_rate_upper_limit" in p.extra and p.extra["watched_days"] > 0
                        for p in rows)


def test_a_mistyped_key_of_the_finder_section_names_that_section():
    from skyretriever.parameters import ParameterError

    with pytest.raises(ParameterError, match=r"^analysis\.finder \(given to every finder; the "
                                             r"peak finder .*'snr_treshold'; did you mean "
                                             r"'snr_threshold'\?"):
        Analysis(finder={"snr_treshold": 5.0})
    with pytest.raises(ParameterError, match=r"^analysis\.peak: unknown parameter 'snr_treshold'"):
        Analysis(peak={"snr_treshold": 5.0})
    assert Analysis(finder={"snr_threshold": 6.0}).finders[0].pars.snr_threshold == 6.0
