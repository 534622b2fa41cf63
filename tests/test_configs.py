"""Every ready project of configs/ runs end to end against the simulated archives."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from skyretriever.parameters import load_yaml
from skyretriever.testing.__main__ import main
from skyretriever.testing.sky import SimulatedSky

CONFIGS = sorted(Path("configs").glob("*.yaml"))
STARS = 12
#: Configs whose catalog comes from the simulated remote catalogs (cached under catalogs/).
REMOTE_CATALOGS = {"wd_flares", "exoplanet_hosts"}


def test_every_config_is_tested():
    assert {path.stem for path in CONFIGS} >= {"demo", "exoplanet_hosts", "wd_flares",
                                               "transits_demo", "extension_demo"}


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=[path.stem for path in CONFIGS])
def test_a_ready_project_runs_on_the_simulated_archives(config, tmp_path, capsys):
    assert main(["run", str(config), "--stars", str(STARS), "--data-root", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    settings = load_yaml(config)["project"]
    name = settings["name"]
    assert f"project {name}" in output and "failed 0" in output
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'skyretriever.db'}")
    with engine.connect() as connection:
        statuses = dict(connection.execute(sa.text(
            "SELECT status, count(*) FROM sources GROUP BY status")).all())
        made = {row[0] for row in connection.execute(sa.text(
            "SELECT DISTINCT observatory FROM lightcurves"))}
        found = connection.execute(sa.text(
            "SELECT s.name, d.finder, d.period FROM detections d JOIN sources s "
            "ON s.id = d.source_id WHERE d.is_simulated = 0")).all()
    engine.dispose()
    assert list(statuses) == ["done"]
    assert made == {obs.lower() for obs in settings["obs_names"]}
    assert found, "the project found no dips, flares or transits"
    if config.stem in REMOTE_CATALOGS:
        # Half the 12 stars are white dwarfs, half planet hosts; the magnitude cuts keep some.
        assert 3 <= statuses["done"] <= 6
        assert list((tmp_path / "catalogs").iterdir())  # the catalog was cached there
    if config.stem == "exoplanet_hosts":
        # The planet hosts' transits are found by the transit search, at their periods.
        periods = {star.name: star.transit.period
                   for star in SimulatedSky.for_projects(STARS, seed=0).stars if star.transit}
        transits = [(star, period) for star, finder, period in found if finder == "transit"]
        assert len({star for star, _ in transits}) >= 3
        for star, period in transits:
            assert period == pytest.approx(periods[star], rel=0.005), star
