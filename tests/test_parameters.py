"""Parameters: types, docs, unknown keys, override order, presets, YAML loading, the config hash."""

from __future__ import annotations

import hashlib
import textwrap

import pytest

from skyretriever import Project
from skyretriever.analysis import AnalysisParameters
from skyretriever.catalogs import CatalogParameters
from skyretriever.execution import ExecutionParameters
from skyretriever.observatories.base import ReducerParameters
from skyretriever.observatories.demo import DemoParameters
from skyretriever.parameters import ParameterError, Parameters, load_yaml, merge, parameter
from skyretriever.project import ProjectParameters


def _all_parameter_classes(cls=Parameters):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_parameter_classes(sub)


def test_every_parameter_has_a_default_type_and_doc():
    classes = list(_all_parameter_classes())
    assert {ProjectParameters, CatalogParameters, DemoParameters, AnalysisParameters,
            ExecutionParameters} <= set(classes)
    for cls in classes:
        for name, field in cls.model_fields.items():
            assert field.description, f"{cls.__name__}.{name} has no doc"
            assert field.annotation is not None, f"{cls.__name__}.{name} has no type"


def test_unknown_key_names_the_key_the_place_and_the_closest_valid_one():
    with pytest.raises(ParameterError) as error:
        DemoParameters.build({"reducer": {"gpa": 3}}, where="observatories.demo")
    message = str(error.value)
    assert "observatories.demo" in message
    assert "reducer" in message and "'gpa'" in message and "did you mean 'gap'" in message


def test_wrong_types_are_errors_on_build_and_on_assignment():
    with pytest.raises(ParameterError, match="version_control.*'yes'"):
        ProjectParameters.build({"name": "x", "version_control": "yes"})
    pars = ProjectParameters.build({"name": "x"})
    with pytest.raises(ParameterError, match="valid boolean"):
        pars.version_control = "yes"
    assert pars.version_control is False
    with pytest.raises(ParameterError, match="did you mean 'version_control'"):
        pars.version_contrl = True
    pars.version_control = True
    assert pars.version_control is True


def test_range_checks_say_what_is_allowed():
    with pytest.raises(ParameterError, match="gap.*greater than 0"):
        ReducerParameters.build({"gap": -1})


def test_merge_is_deep_and_later_layers_win():
    merged = merge({"a": {"b": 1, "c": 2}, "d": 1}, None, {"a": {"b": 5}}, {"d": 2})
    assert merged == {"a": {"b": 5, "c": 2}, "d": 2}


def test_subclasses_add_parameters():
    class MyParameters(ReducerParameters):
        smooth: int = parameter(3, "Points in the running median.")

    pars = MyParameters.build({"gap": 2, "smooth": 5})
    assert (pars.gap, pars.smooth) == (2.0, 5)
    with pytest.raises(ParameterError, match="did you mean 'smooth'"):
        MyParameters.build({"smoth": 5})


def test_presets_fill_values_below_the_user_ones():
    pars = CatalogParameters.build({"default": "demo"})
    assert pars.filename.endswith("demo.csv") and pars.kind == "file"
    pars = CatalogParameters.build({"default": "test", "num_sources": 7})
    assert (pars.kind, pars.num_sources) == ("synthetic", 7)
    with pytest.raises(ParameterError, match="unknown preset 'tset'; did you mean 'test'"):
        CatalogParameters.build({"default": "tset"})


def test_override_order_default_yaml_kwargs_per_observatory(tmp_path, database_url, data_root):
    config = tmp_path / "p.yaml"
    config.write_text(textwrap.dedent("""
        project: {name: layered, obs_names: [demo]}
        catalog: {default: test, num_sources: 3}
        observatories:
          reducer: {gap: 10, min_points: 2}
          download_workers: 2
          DEMO: {num_points: 30, reducer: {gap: 11}}
        analysis:
          finder: {snr_threshold: 6.0}
    """))
    proj = Project(cfg_file=config, database_url=database_url, data_root=str(data_root),
                   obs_kwargs={"reducer": {"gap": 20}, "download_workers": 3},
                   demo={"reducer": {"gap": 12}},
                   analysis_kwargs={"finder_kwargs": {"snr_threshold": 7.5}})
    demo = proj.observatories["DEMO"].pars
    # field default (min_points 1) < YAML (2); YAML common (10) < kwargs common (20)
    # < YAML per observatory (11) < kwargs per observatory (12)
    assert demo.reducer.min_points == 2
    assert demo.reducer.gap == 12.0
    assert demo.download_workers == 3
    assert demo.num_points == 30
    assert demo.wait_time == 0.0                     # the field default
    assert proj.analysis.finders[0].pars.snr_threshold == 7.5
    assert proj.catalog.pars.num_sources == 3


def test_unknown_sections_and_keywords_are_errors(tmp_path, database_url, data_root):
    config = tmp_path / "p.yaml"
    config.write_text("project: {name: x}\nobservatorys: {}\n")
    with pytest.raises(ParameterError, match="unknown section 'observatorys'; did you mean "
                                             "'observatories'"):
        Project(cfg_file=config, database_url=database_url, data_root=str(data_root))
    with pytest.raises(ParameterError, match="unknown keyword argument 'catalog_kwarg'"):
        Project(name="x", cfg_file=False, catalog_kwarg={}, database_url=database_url)
    with pytest.raises(ParameterError, match="unknown observatory 'TES'"):
        Project(name="x", cfg_file=False, obs_names=["TES"], database_url=database_url)


def test_yaml_is_loaded_safely_with_line_numbers(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("project:\n  name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ParameterError, match="not valid \\(safe\\) YAML at line 2"):
        load_yaml(evil)
    broken = tmp_path / "broken.yaml"
    broken.write_text("project:\n  name: [unclosed\n")
    with pytest.raises(ParameterError, match="broken.yaml"):
        load_yaml(broken)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ParameterError, match="must hold a mapping"):
        load_yaml(listing)
    with pytest.raises(ParameterError, match="does not exist"):
        load_yaml(tmp_path / "missing.yaml")


def test_config_hash_is_the_sha256_of_config_yaml_and_ignores_non_critical(project_factory):
    proj = project_factory(version_control=True)
    path = proj.write_config()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == proj.cfg_hash
    assert path.parent.name == f"TEST_PROJECT_{proj.cfg_hash}"
    assert (path.parent / "settings.yaml").exists()
    quiet = project_factory(version_control=True, progress=True, verbose=True,
                            demo={"wait_time": 0.5, "download_workers": 9},
                            execution_kwargs={"batch_size": 3, "workers": 1})
    assert quiet.cfg_hash == proj.cfg_hash
    changed = project_factory(version_control=True, demo={"num_points": 50})
    assert changed.cfg_hash != proj.cfg_hash
    other_catalog = project_factory(version_control=True,
                                    catalog_kwargs={"default": "test", "num_sources": 21})
    assert other_catalog.cfg_hash != proj.cfg_hash


def test_config_yaml_has_version_catalog_hash_and_every_object(project_factory):
    proj = project_factory()
    config = load_yaml(proj.write_config())
    assert config["skyretriever_version"]
    assert len(config["catalog"]["catalog_hash"]) == 64
    assert config["observatories"]["demo"]["reducer"]["gap"] == 40.0
    assert config["analysis"]["peak"]["snr_threshold"] == 5.5
    assert "wait_time" not in config["observatories"]["demo"]      # not critical


def test_sections_of_observatories_not_in_obs_names_are_checked_too(tmp_path):
    from skyretriever import Project

    config = tmp_path / "unused.yaml"
    config.write_text("project: {name: unused, obs_names: [demo]}\n"
                      "catalog: {default: test}\n"
                      "observatories:\n  demo: {wait_time: 0}\n  ZTF: {flare_fractio: 0.9}\n")
    with pytest.raises(ParameterError, match=r"observatories\.ztf of .*unused\.yaml \(not in "
                                             r"obs_names\): unknown parameter 'flare_fractio'"):
        Project(cfg_file=config, data_root=str(tmp_path / "data"))
    config.write_text(config.read_text().replace("flare_fractio: 0.9", "bands: [r]"))
    project = Project(cfg_file=config, data_root=str(tmp_path / "data"))
    assert list(project.observatories) == ["demo"]          # checked, not added
    with pytest.raises(ParameterError, match=r"observatories\.k2 \(not in obs_names\)"):
        Project(name="unused", cfg_file=False, catalog_kwargs={"default": "test"},
                K2={"campaign": 3}, data_root=str(tmp_path / "data"))


@pytest.mark.parametrize("key,expected", [("magnitude", "mag"), ("declination", "dec"),
                                          ("decl", "dec"), ("gpa", "gap"),
                                          ("mag_filtre", "mag_filter"), ("zzz", None)])
def test_the_closest_name_prefers_one_the_key_spells_out(key, expected):
    from skyretriever.parameters import closest

    assert closest(key, ["mag", "mag_filter", "dec", "ra", "gap"]) == expected
