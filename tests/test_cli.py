"""The skyretriever command: run, status, db, errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from skyretriever.cli import main


def _config(tmp_path: Path, database_url: str, data_root: Path, extra: str = "") -> Path:
    path = tmp_path / "cli.yaml"
    path.write_text(textwrap.dedent(f"""
        project: {{name: cli_test, obs_names: [demo], progress: false}}
        database: {{url: "{database_url}"}}
        data_root: "{data_root}"
        catalog: {{default: test, num_sources: 12}}
        execution: {{scheduler: serial, batch_size: 5}}
    """) + extra)
    return path


def test_run_then_status(tmp_path, database_url, data_root, capsys):
    config = _config(tmp_path, database_url, data_root)
    assert main(["run", str(config), "--start", "0", "--stop", "8"]) == 0
    out = capsys.readouterr().out
    assert "8 sources" in out and "done 8" in out
    assert main(["status", str(config)]) == 0
    out = capsys.readouterr().out
    assert "sources  done 8, failed 0, new 0" in out
    assert "catalog  12 rows" in out
    assert main(["status", str(config), "--format", "json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["sources"]["done"] == 8 and status["observatories"]["demo"]["raw"] == 8
    assert status["database"].rsplit("/", 1)[-1] == database_url.rsplit("/", 1)[-1]


def test_db_upgrade_and_current(tmp_path, database_url, data_root, capsys):
    config = _config(tmp_path, database_url, data_root)
    from skyretriever import database

    head = database.head_revision()
    assert main(["db", "upgrade", str(config)]) == 0
    assert f"schema {head} (newest {head})" in capsys.readouterr().out
    assert main(["db", "current", "--url", database_url]) == 0
    assert f"schema {head} (newest {head})" in capsys.readouterr().out


def test_bad_configuration_is_a_clear_error_with_exit_status_1(tmp_path, database_url, data_root,
                                                               capsys):
    config = _config(tmp_path, database_url, data_root, "analysis: {finder: {snr_treshold: 5}}\n")
    assert main(["run", str(config)]) == 1
    error = capsys.readouterr().err
    assert "analysis.finder (given to every finder" in error and "did you mean 'snr_threshold'" in error
    assert main(["run", str(tmp_path / "missing.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_unreachable_database_is_exit_status_1_without_the_password(tmp_path, data_root, capsys):
    config = _config(tmp_path, "postgresql://postgres:s3cret@127.0.0.1:1/none", data_root)
    assert main(["run", str(config)]) == 1
    error = capsys.readouterr().err
    assert "cannot use the database" in error and "s3cret" not in error


def test_failed_sources_give_exit_status_3(tmp_path, database_url, data_root, capsys):
    import tests.test_project_run as flaky_module

    flaky_module.FlakyDemoObs.failing = {"test_0000002"}
    try:
        config = _config(tmp_path, database_url, data_root).read_text().replace(
            "obs_names: [demo]", "obs_names: [flaky]")
        path = tmp_path / "flaky.yaml"
        path.write_text(config)
        assert main(["run", str(path)]) == 3
        assert "test_0000002: download (flaky)" in capsys.readouterr().out
    finally:
        flaky_module.FlakyDemoObs.failing = set()


def test_python_dash_m_runs_the_same_command():
    result = subprocess.run([sys.executable, "-m", "skyretriever", "--version"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("skyretriever ")
    result = subprocess.run([sys.executable, "-m", "skyretriever", "frobnicate"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.parametrize("argv", [["run"], ["status"], ["db"]])
def test_missing_arguments_are_usage_errors(argv):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize("argv", [["run", "-v", "CONFIG"], ["-v", "run", "CONFIG"],
                                  ["check", "CONFIG", "--verbose"], ["db", "upgrade", "-v"]])
def test_verbose_is_accepted_before_and_after_the_command(argv):
    from skyretriever.cli import _parser

    assert _parser().parse_args(argv).verbose is True
    quiet = [word for word in argv if word not in ("-v", "--verbose")]
    assert _parser().parse_args(quiet).verbose is False
