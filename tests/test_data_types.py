"""Data types: the registry of raw tables, file names by data type, the analysis dispatch.

Photometry is the one data type today; these tests hold the seams a second one
(images, solar events) is added through, so that it needs no second pipeline.
"""

from __future__ import annotations

import doctest
import re

import pytest

import skyretriever.models.raw as raw_module
from skyretriever import storage
from skyretriever.analysis.analysis import Analysis, AnalysisResult
from skyretriever.models import RawData, RawPhotometry, data_types, raw_data_class
from skyretriever.observatories.base import OBSERVATORIES, register_observatory
from skyretriever.observatories.demo import VirtualDemoObs
from skyretriever.parameters import ParameterError
from skyretriever.project import Project


def test_photometry_is_registered_with_its_table():
    assert "photometry" in data_types()
    assert raw_data_class("photometry") is RawPhotometry
    assert issubclass(RawPhotometry, RawData)
    assert RawPhotometry.data_type == "photometry"


def test_an_unknown_data_type_names_the_known_ones():
    with pytest.raises(ValueError, match=r"no data type 'spectra': the data types are .*photometry"):
        raw_data_class("spectra")


def test_every_raw_table_has_the_identity_columns():
    identity = {"source_name", "observatory", "ra", "dec", "download_hash", "target_key",
                "cross_ids", "is_empty", "filename", "checksum"}
    for name in data_types():
        columns = set(raw_data_class(name).__table__.columns.keys())
        assert identity <= columns, f"{name} lacks {sorted(identity - columns)}"


def test_the_registry_module_examples_run():
    result = doctest.testmod(raw_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_file_names_carry_the_data_type():
    photometry = storage.raw_filename("TESS", "TIC 1", 10.0)
    images = storage.raw_filename("TESS", "TIC 1", 10.0, data_type="images")
    assert "_photometry_" in photometry and "_images_" in images
    assert storage.is_raw_filename(photometry, "TESS")
    # A scan for photometry never adopts another data type's file, and the other way round.
    assert not storage.is_raw_filename(images, "TESS")
    assert storage.is_raw_filename(images, "TESS", data_type="images")
    assert not storage.is_raw_filename(photometry, "TESS", data_type="images")
    reduced = storage.reduced_filename("proj_abc", "TESS", "TIC 1", 10.0, data_type="images")
    assert re.fullmatch(r"projects/proj_abc/RA010/TESS_images_TIC_1_\w+_reduced\.h5", reduced)


def test_an_observatory_finds_its_table_through_its_data_type():
    assert VirtualDemoObs().raw_class is RawPhotometry

    class SpectraObs(VirtualDemoObs):
        data_type = "spectra"

    with pytest.raises(ValueError, match="no data type 'spectra'"):
        _ = SpectraObs().raw_class


def test_an_observatory_refuses_to_reduce_another_data_type():
    obs = VirtualDemoObs(empty_fraction=0)
    raw = obs.download({"name": "star", "ra": 1.0, "dec": 2.0, "mag": 15.0})
    with pytest.raises(ValueError, match="reduces photometry, not 'images'"):
        obs.reduce(raw, data_type="images")


def test_analysis_dispatches_by_data_type():
    obs = VirtualDemoObs(empty_fraction=0, flare_fraction=0)
    row = {"name": "star", "ra": 1.0, "dec": 2.0, "mag": 15.0}
    lightcurves = obs.reduce(obs.download(row))
    result = Analysis().analyze("photometry", lightcurves, row)
    assert result.properties["num_lightcurves"] == len(lightcurves) > 0


def test_a_subclass_adds_a_data_type_with_one_method():
    class SpectraAnalysis(Analysis):
        def analyze_spectra(self, spectra, source):
            return AnalysisResult(properties={"num_spectra": len(spectra), "name": source["name"]})

    result = SpectraAnalysis().analyze("spectra", [object(), object()], {"name": "star"})
    assert result.properties == {"num_spectra": 2, "name": "star"}
    with pytest.raises(NotImplementedError,
                       match="no analyze_audio: it analyses cutouts, images, photometry, spectra"):
        SpectraAnalysis().analyze("audio", [], {"name": "star"})


@pytest.fixture
def spectra_observatory():
    """A demo observatory that says it downloads spectra, registered for one test."""

    @register_observatory
    class SpectraDemo(VirtualDemoObs):
        name = "spectrademo"
        data_type = "spectra"

    yield SpectraDemo
    OBSERVATORIES.pop("spectrademo")


def test_a_project_refuses_observatories_of_different_data_types(spectra_observatory):
    with pytest.raises(ParameterError, match=r"different data types \(demo: photometry, "
                                             r"spectrademo: spectra\).*one project per data type"):
        Project(name="mixed", cfg_file=False, obs_names=["demo", "spectrademo"])
    # One data type, even a new one, is a project like any other.
    project = Project(name="spectra", cfg_file=False, obs_names=["spectrademo"])
    assert project.observatories["spectrademo"].data_type == "spectra"
