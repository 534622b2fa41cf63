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
import reprlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

__all__ = [
    "MAX_ALIAS_NODES",
    "ParameterError",
    "Parameters",
    "bounded_repr",
    "closest",
    "critical_dict",
    "load_yaml",
    "merge",
    "parameter",
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


def bounded_repr(value: Any, limit: int = 200) -> str:
    """``repr(value)`` cut to at most ``limit`` characters, for error messages.

    A user's value is shown so they can find it, never whole: a value of a
    megabyte (or a YAML alias bomb) gives a message of a line. Long strings keep
    their start and end; long lists and deep nesting are elided with ``...``.

    Examples
    --------
    >>> bounded_repr("soon")
    "'soon'"
    >>> len(bounded_repr("x" * 1_000_000)) <= 200
    True
    >>> bounded_repr(list(range(100)), limit=40)
    '[0, 1, 2, 3, 4, 5, 6, 7, ...]'
    """
    limit = max(int(limit), 8)
    # reprlib stops at these sizes while it walks a value, so a huge (or self-sharing) value
    # costs no more to show than a small one; the text is then cut to the limit. One Repr
    # per call: download threads may format errors at the same time.
    shown = reprlib.Repr()
    shown.maxlevel = 3
    shown.maxdict = shown.maxlist = shown.maxtuple = shown.maxset = 8
    shown.maxfrozenset = shown.maxdeque = shown.maxarray = 8
    shown.maxstring = shown.maxother = shown.maxlong = limit
    text = shown.repr(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def closest(key: str, valid: Iterable[str]) -> str | None:
    """The valid name most like ``key``, or ``None`` when nothing is close."""
    valid = list(valid)
    lowered = {name.lower(): name for name in valid}
    if key.lower() in lowered:
        return lowered[key.lower()]
    # A name the key spells out in full ('magnitude' for 'mag') before a merely similar one
    # ('mag_filter'); 'mag_filtre' is another compound, not a spelt-out 'mag'.
    prefixes = [name for lower, name in lowered.items()
                if len(lower) >= 3 and key.lower().startswith(lower)
                and key[len(lower):len(lower) + 1].isalpha()]
    if prefixes:
        return max(prefixes, key=len)
    matches = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
    return matches[0] if matches else None


def unknown_key_message(key: str, valid: Iterable[str], kind: str = "parameter") -> str:
    """``unknown parameter 'gpa'; did you mean 'gap'?`` (or the list of valid names)."""
    valid = sorted(valid)
    # difflib's cost grows with the product of the lengths: a huge key is compared by its start
    suggestion = closest(str(key)[:200], valid)
    if suggestion is not None:
        return f"unknown {kind} {bounded_repr(key)}; did you mean {suggestion!r}?"
    return f"unknown {kind} {bounded_repr(key)}; valid names are: {', '.join(valid)}"


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


_LONGEST_PROBLEM = 600


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
            text += f" (got {bounded_repr(value)} of type {type(value).__name__})"
        # a validator's own message may quote a huge value: keep its start and its end
        if len(text) > _LONGEST_PROBLEM:
            half = _LONGEST_PROBLEM // 2
            text = f"{text[:half]} ... {text[-half:]}"
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


class _TooManyAliases(yaml.composer.ComposerError):
    """A configuration file's aliases expand beyond :data:`MAX_ALIAS_NODES`."""


#: Most values a configuration file may reach through its aliases (``*name``), counted
#: as written out: plenty for sharing a section, far below what an alias bomb needs.
MAX_ALIAS_NODES = 10_000


class _SafeLoaderNoDates(yaml.SafeLoader):
    """Safe loading only; dates stay strings so every value round-trips through YAML.

    Aliases are counted while the document is composed: each one adds the number
    of values its anchor holds when written out (nested aliases included). A file
    whose aliases add up to more than :data:`MAX_ALIAS_NODES` is refused at the
    alias that crosses the line, before anything expands it (``repr``, a copy, a
    validation error), so a few hundred bytes cannot make billions of values.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._sizes: dict[int, int] = {}   # id(node) -> values it holds written out
        self._through_aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        is_alias = self.check_event(yaml.AliasEvent)
        mark = self.peek_event().start_mark
        node = super().compose_node(parent, index)
        if is_alias:
            self._through_aliases += self._sizes[id(node)]
            if self._through_aliases > MAX_ALIAS_NODES:
                raise _TooManyAliases(
                    None, None,
                    f"its aliases expand to more than {MAX_ALIAS_NODES:,} values (an alias "
                    "bomb?); write the values out or use fewer aliases", mark)
            return node
        if isinstance(node, yaml.SequenceNode):
            size = 1 + sum(self._sizes[id(item)] for item in node.value)
        elif isinstance(node, yaml.MappingNode):
            size = 1 + sum(self._sizes[id(key)] + self._sizes[id(value)]
                           for key, value in node.value)
        else:
            size = 1
        self._sizes[id(node)] = size
        return node


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
        Python objects, expands aliases beyond :data:`MAX_ALIAS_NODES` values, or
        is not a mapping. The message names the file and line.
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
        what = "is refused" if isinstance(error, _TooManyAliases) else "is not valid (safe) YAML"
        raise ParameterError(f"configuration file {str(path)!r} {what}{place}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError(
            f"configuration file {str(path)!r} must hold a mapping of sections at its top "
            f"level, not a {type(data).__name__}"
        )
    return data
