"""The ready projects of configs/ run end to end against the simulated archives."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from skyretriever.parameters import load_yaml
from skyretriever.testing.__main__ import main


@pytest.mark.slow
@pytest.mark.parametrize("config,observatories", [
    ("configs/wd_flares.yaml", {"ztf", "tess"}),
    ("configs/exoplanet_hosts.yaml", {"tess", "k2"}),
])
def test_a_ready_project_runs_on_the_simulated_archives(config, observatories, tmp_path,
                                                        capsys):
    assert main(["run", config, "--stars", "12", "--data-root", str(tmp_path)]) == 0
    output = capsys.readouterr().out
    name = load_yaml(config)["project"]["name"]
    assert f"project {name}" in output and "failed 0" in output
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'skyretriever.db'}")
    with engine.connect() as connection:
        statuses = dict(connection.execute(sa.text(
            "SELECT status, count(*) FROM sources GROUP BY status")).all())
        made = {row[0] for row in connection.execute(sa.text(
            "SELECT DISTINCT observatory FROM lightcurves"))}
        dips_or_flares = connection.execute(sa.text(
            "SELECT count(*) FROM detections WHERE is_simulated = 0")).scalar()
    engine.dispose()
    # Half the 12 stars are white dwarfs, half planet hosts; the magnitude cuts keep some.
    assert list(statuses) == ["done"] and 3 <= statuses["done"] <= 6
    assert made == observatories
    assert dips_or_flares > 0
    assert list((tmp_path / "catalogs").iterdir())  # the catalog was cached there
