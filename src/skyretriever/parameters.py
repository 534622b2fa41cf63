"""Typed, documented parameters for every configurable class.

Each configurable class has a :class:`Parameters` subclass: typed fields, each
with a default and a one-line doc. Values come from, lowest to highest: the
field default, the named preset, the YAML file's section for that class, the
constructor's keyword arguments, and a per-observatory (or per-finder)
sub-dictionary. :func:`merge` applies those layers, :meth:`Parameters.build`
validates the result.

Unknown or mistyped names are errors that name the offending key, where it
came from, and the closest valid key. Assignment is validated too.

Examples
--------
>>> from skyretriever.parameters import Parameters, parameter
>>> class ReducerParameters(Parameters):
...     gap: float = parameter(40.0, "Split a light curve at gaps longer than this (days).")
>>> ReducerParameters.build({"gap": 10}).gap
10.0
>>> ReducerParameters.build({"gpa": 10})
Traceback (most recent call last):
...
skyretriever.parameters.ParameterError: ReducerParameters: unknown parameter 'gpa'; did you mean 'gap'?
"""

from __future__ import annotations

import copy
import difflib
import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "ParameterError",
    "Parameters",
    "closest",
    "critical_dict",
    "load_yaml",
    "merge",
    "parameter",
    "sha256_of_text",
    "unknown_key_message",
]


class ParameterError(ValueError):
    """A configuration value is unknown, mistyped or out of range.

    The message names the offending key, where it was set, and what to do.
    """


def parameter(default: Any = ..., doc: str = "", *, critical: bool = True, **kwargs: Any) -> Any:
    """Declare a parameter field with its default and one-line documentation.

    Parameters
    ----------
    default
        The default value (use ``default_factory=`` for nested parameter classes).
    doc
        One line saying what the parameter does, shown in errors and ``config.yaml``.
    critical
        ``False`` for parameters that do not change results (verbosity, number of
        workers, paths); those are left out of the config hash.

    Examples
    --------
    >>> class P(Parameters):
    ...     verbose: bool = parameter(False, "Print more.", critical=False)
    >>> P().verbose
    False
    """
    if not doc:
        raise TypeError("every parameter needs a one-line doc")
    if "default_factory" in kwargs:
        return Field(description=doc, json_schema_extra={"critical": critical}, **kwargs)
    return Field(default, description=doc, json_schema_extra={"critical": critical}, **kwargs)


def closest(key: str, valid: Iterable[str]) -> str | None:
    """The valid name most like ``key``, or ``None`` when nothing is close."""
    valid = list(valid)
    lowered = {name.lower(): name for name in valid}
    if key.lower() in lowered:
        return lowered[key.lower()]
    matches = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_message(key: str, valid: Iterable[str], kind: str = "parameter") -> str:
    """``unknown parameter 'gpa'; did you mean 'gap'?`` (or the list of valid names)."""
    valid = sorted(valid)
    suggestion = closest(str(key), valid)
    if suggestion is not None:
        return f"unknown {kind} {key!r}; did you mean {suggestion!r}?"
    return f"unknown {kind} {key!r}; valid names are: {', '.join(valid)}"


def merge(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge dictionaries, later layers winning; nested dictionaries merge key by key.

    Examples
    --------
    >>> merge({"reducer": {"gap": 40, "min": 1}}, {"reducer": {"gap": 10}})
    {'reducer': {'gap': 10, 'min': 1}}
    """
    result: dict[str, Any] = {}
    for layer in layers:
        if not layer:
            continue
        for key, value in layer.items():
            if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
                result[key] = merge(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


def _format_validation_error(error: ValidationError, where: str) -> str:
    lines = []
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if part != "__root__")
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        text = f"{location}: {message}" if location else message
        if "input" in item and item["type"] not in ("value_error", "missing"):
            value = item["input"]
            text += f" (got {value!r} of type {type(value).__name__})"
        lines.append(text)
    prefix = f"{where}: " if where else ""
    if len(lines) == 1:
        return prefix + lines[0]
    return prefix + "several problems:\n  " + "\n  ".join(lines)


class Parameters(BaseModel):
    """Base of every parameters class: strict types, validated assignment, no unknown keys.

    A subclass declares fields with :func:`parameter`. It may offer named presets
    (``presets``), chosen by the field named in ``preset_field``; a preset fills
    in values below whatever the user sets.
    """

    model_config = ConfigDict(
        strict=True,
        validate_assignment=True,
        extra="forbid",
        validate_default=True,
        arbitrary_types_allowed=False,
        protected_namespaces=(),
    )

    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    preset_field: ClassVar[str | None] = None
    aliases: ClassVar[dict[str, str]] = {}

    @classmethod
    def prepare_input(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Rearrange raw input before keys are checked (subclasses override; default: as is)."""
        return data

    @model_validator(mode="before")
    @classmethod
    def _check_keys_and_apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        data = cls.prepare_input(dict(data))
        for alias, name in cls.aliases.items():
            if alias not in data:
                continue
            value = data.pop(alias)
            if isinstance(value, Mapping) and isinstance(data.get(name), Mapping):
                data[name] = merge(data[name], value)
            else:
                data[name] = value
        for key in data:
            if key not in cls.model_fields:
                raise ValueError(unknown_key_message(key, cls.model_fields))
        if cls.preset_field and data.get(cls.preset_field) is not None:
            name = data[cls.preset_field]
            if isinstance(name, str) and name in cls.presets:
                data = merge(cls.presets[name], data)
            elif isinstance(name, str):
                raise ValueError(
                    f"{cls.preset_field}: " + unknown_key_message(name, cls.presets, "preset")
                )
        return data

    @classmethod
    def build(cls, *layers: Mapping[str, Any] | None, where: str = ""):
        """Merge ``layers`` (lowest first) and validate them into a parameters object.

        Raises
        ------
        ParameterError
            Naming every unknown or mistyped key, prefixed by ``where``.
        """
        for layer in layers:
            if layer is not None and not isinstance(layer, Mapping):
                raise ParameterError(
                    f"{where or cls.__name__}: expected a mapping of parameters, "
                    f"got {type(layer).__name__}"
                )
        try:
            return cls.model_validate(merge(*layers))
        except ValidationError as error:
            raise ParameterError(_format_validation_error(error, where or cls.__name__)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        if not name.startswith("_") and name not in type(self).model_fields:
            raise ParameterError(
                f"{type(self).__name__}: " + unknown_key_message(name, type(self).model_fields)
            )
        try:
            super().__setattr__(name, value)
        except ValidationError as error:
            raise ParameterError(_format_validation_error(error, type(self).__name__)) from None

    @classmethod
    def describe(cls) -> dict[str, str]:
        """Each field's one-line documentation, by name."""
        return {name: field.description or "" for name, field in cls.model_fields.items()}

    def to_dict(self, critical_only: bool = False) -> dict[str, Any]:
        """Plain (YAML-safe) values; with ``critical_only`` the non-critical ones are left out."""
        return critical_dict(self) if critical_only else self.model_dump(mode="json")


def _is_critical(model: type[BaseModel], name: str) -> bool:
    extra = model.model_fields[name].json_schema_extra
    return not (isinstance(extra, dict) and extra.get("critical") is False)


def critical_dict(pars: BaseModel) -> dict[str, Any]:
    """The parameters that change results, as plain values (nested models recursed)."""
    result: dict[str, Any] = {}
    for name in type(pars).model_fields:
        if not _is_critical(type(pars), name):
            continue
        value = getattr(pars, name)
        if isinstance(value, BaseModel):
            result[name] = critical_dict(value)
        else:
            result[name] = pars.__pydantic_serializer__.to_python(
                pars, mode="json", include={name}
            )[name]
    return result


class _SafeLoaderNoDates(yaml.SafeLoader):
    """Safe loading only; dates stay strings so every value round-trips through YAML."""


_SafeLoaderNoDates.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML configuration file with safe loading; the top level must be a mapping.

    Raises
    ------
    ParameterError
        If the file is missing, is not valid YAML, uses tags that construct
        Python objects, or is not a mapping. The message names the file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ParameterError(f"configuration file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ParameterError(f"cannot read configuration file {str(path)!r}: {error}") from None
    try:
        data = yaml.load(text, Loader=_SafeLoaderNoDates)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        place = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ParameterError(
            f"configuration file {str(path)!r} is not valid (safe) YAML{place}: {problem}"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(
            f"configuration file {str(path)!r} must hold a mapping of sections at its top "
            f"level, not a {type(data).__name__}"
        )
    return data


def sha256_of_text(text: str) -> str:
    """Hex SHA-256 of a UTF-8 string."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
