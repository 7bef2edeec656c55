"""Typed, frozen parameter dataclasses and their validation.

Parameters arrive as strings (CLI ``-p key=value``), as YAML values (``papers/NAME/<scale>.yaml``)
or as notebook variables. :func:`parse` turns any of them into a frozen dataclass: unknown keys and
values of the wrong type are errors (:class:`~workbench.errors.ConfigError`), never silently
ignored. Nothing is ever ``eval``-ed: strings are converted by type only.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _convert(name: str, value: Any, tp: Any) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(name, value, arg)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"parameter {name!r}: {value!r} is not a valid {_tname(tp)}")
    if origin is typing.Literal:
        for a in args:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"parameter {name!r}: {value!r} is not one of {list(args)}")
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter {name!r}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        out = [_convert(name, v, inner) for v in value]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise ConfigError(f"parameter {name!r}: expected a JSON object, got {value!r}") from None
        if not isinstance(value, dict):
            raise ConfigError(f"parameter {name!r}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"parameter {name!r}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"parameter {name!r}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                pass
        raise ConfigError(f"parameter {name!r}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"parameter {name!r}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            v = float(value)
        elif isinstance(value, str):
            try:
                v = float(value)
            except ValueError:
                raise ConfigError(f"parameter {name!r}: expected a number, got {value!r}") from None
        else:
            raise ConfigError(f"parameter {name!r}: expected a number, got {value!r}")
        if v != v:
            raise ConfigError(f"parameter {name!r}: NaN is not allowed")
        return v
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"parameter {name!r}: expected a string, got {value!r}")
    return value


def _tname(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def parse(cls: type, params: Mapping[str, Any] | None = None, **overrides: Any):
    """Validate ``params`` (plus ``overrides``) into the frozen dataclass ``cls``.

    Unknown keys raise :class:`ConfigError` naming them and the allowed keys; values are converted
    by the field's type annotation (``"3"`` -> ``3`` for an ``int``), and ``cls.__post_init__``
    range checks run last.
    """
    merged = dict(params or {})
    merged.update(overrides)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(merged) - set(fields))
    if unknown:
        raise ConfigError(f"unknown parameter(s) {', '.join(map(repr, unknown))} for {cls.__name__}; "
                          f"known: {', '.join(sorted(fields))}")
    kwargs = {k: _convert(k, v, hints[k]) for k, v in merged.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # missing required field
        raise ConfigError(f"{cls.__name__}: {e}") from None


def parse_overrides(pairs: list[str] | None) -> dict[str, str]:
    """``["lr=1e-3", "seed=2"]`` -> ``{"lr": "1e-3", "seed": "2"}`` (values stay strings)."""
    out: dict[str, str] = {}
    for p in pairs or []:
        if "=" not in p:
            raise ConfigError(f"parameter override {p!r} is not of the form key=value")
        k, v = p.split("=", 1)
        k = k.strip()
        if not k.isidentifier():
            raise ConfigError(f"parameter name {k!r} is not a valid identifier")
        out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a parameter file (a flat YAML mapping)."""
    import yaml     # here, not at the top: the CLI's help and errors need no YAML
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"parameter file {path} does not exist") from None
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"parameter file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"parameter file {path} must hold a mapping of parameters")
    return data


def check(cond: bool, msg: str) -> None:
    """Raise ConfigError(msg) unless ``cond`` (for ``__post_init__`` range checks)."""
    if not cond:
        raise ConfigError(msg)


def asdict(obj) -> dict[str, Any]:
    return dataclasses.asdict(obj)
