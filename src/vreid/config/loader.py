"""Build typed config dataclasses from YAML files and `key=value` overrides, with errors that name file and key."""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, get_args, get_origin, get_type_hints

import yaml

from vreid.config.catalog import resolve_config
from vreid.errors import VreidError

T = TypeVar("T")


class ConfigError(VreidError, ValueError):
    """A config value is missing, unknown or of the wrong kind. The message names file, key and the fix.

    `file`, `key` and `detail` are kept apart so that a caller can say where a value came from (a YAML file or
    a command-line override).
    """

    def __init__(self, message: str, file: str | None = None, key: str | None = None,
                 detail: str | None = None) -> None:
        super().__init__(message)
        self.file, self.key, self.detail = file, key, detail


class FieldError(ValueError):
    """Raised by a config dataclass's `validate()` for one of its own fields; `build` prefixes the section."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def choices(*allowed: Any, registry: Any = None) -> dict:
    """Field metadata: the allowed values, fixed or read from a registry (a zero-arg callable returning one)."""
    return {"choices": allowed, "registry": registry}


def polymorphic(registry: Any) -> dict:
    """Field metadata: the section's `name` picks its dataclass from `registry()` (objects with a `Config`)."""
    return {"polymorphic": registry}


def bounds(min: float | None = None, max: float | None = None, above: float | None = None) -> dict:
    """Field metadata: the number must be >= `min`, <= `max` and > `above` (each optional)."""
    return {"bounds": (min, max, above)}


def _out_of_bounds(value: Any, meta: Mapping[str, Any]) -> str | None:
    low, high, above = meta.get("bounds", (None, None, None))
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if low is not None and value < low:
        return f"must be >= {low}, got {value!r}"
    if high is not None and value > high:
        return f"must be <= {high}, got {value!r}"
    if above is not None and value <= above:
        return f"must be > {above}, got {value!r}"
    return None


def _allowed(meta: Mapping[str, Any]) -> tuple[Any, ...] | None:
    if meta.get("registry") is not None:
        table = meta["registry"]()
        return tuple(table.names() if hasattr(table, "names") else table)
    if meta.get("choices"):
        return tuple(meta["choices"])
    return None


def _fail(file: str, key: str, msg: str) -> ConfigError:
    return ConfigError(f"{file}: key '{key}': {msg}", file=file, key=key, detail=msg)


def _coerce(value: Any, tp: Any, file: str, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors: list[ConfigError] = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, file, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[0] if errors else _fail(file, key, f"bad value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise _fail(file, key, f"{value!r} is not one of {', '.join(map(str, get_args(tp)))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _fail(file, key, f"expected a list, got {value!r}")
        (item_tp, *rest) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, file, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise _fail(file, key, f"expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, file=file, prefix=key)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _fail(file, key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _fail(file, key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads 3.5e-4 as a string
            except ValueError:
                pass
        raise _fail(file, key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, Path)):
            return str(value)
        raise _fail(file, key, f"expected a string, got {value!r}")
    return value


def build(cls: type[T], data: Mapping[str, Any] | None, file: str = "<config>", prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, validating every key; unknown keys are errors."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise _fail(file, prefix or "<root>", f"expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise _fail(file, where + unknown[0], f"unknown key; allowed keys here: {', '.join(sorted(fields))}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise _fail(file, key, "is required")
            if f.metadata.get("polymorphic") is None:
                continue
            value: Any = {}
        else:
            value = data[name]
        if f.metadata.get("polymorphic") is not None:
            kwargs[name] = _build_polymorphic(f, value, file, key)
            continue
        value = _coerce(value, hints[name], file, key)
        allowed = _allowed(f.metadata)
        if allowed is not None and value is not None and value not in allowed:
            raise _fail(file, key, f"{value!r} is not one of {', '.join(map(str, allowed))}")
        wrong = _out_of_bounds(value, f.metadata)
        if wrong:
            raise _fail(file, key, wrong)
        kwargs[name] = value
    try:
        obj = cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise _fail(file, prefix or "<root>", str(e)) from None
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except FieldError as e:
            raise _fail(file, f"{prefix}.{e.key}" if prefix else e.key, str(e)) from None
        except ConfigError:
            raise
        except ValueError as e:
            raise _fail(file, prefix or "<root>", str(e)) from None
    return obj


def _build_polymorphic(f: dataclasses.Field, value: Any, file: str, key: str) -> Any:
    registry = f.metadata["polymorphic"]()
    if not isinstance(value, Mapping):
        raise _fail(file, key, f"expected a mapping with a 'name', got {value!r}")
    default = f.default if f.default is not dataclasses.MISSING else None
    name = value.get("name", getattr(default, "name", None))
    if name not in registry:
        raise _fail(file, f"{key}.name", f"{name!r} is not one of {', '.join(registry.names())}")
    config_cls = registry.get(name).Config
    return build(config_cls, {**value, "name": name}, file=file, prefix=key)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'optim.lr=1e-3' -> (['optim', 'lr'], 0.001); values are parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override '{text}': expected KEY=VALUE, e.g. optim.lr=1e-3")
    key, raw = text.split("=", 1)
    return key.strip().split("."), yaml.safe_load(raw) if raw.strip() else ""


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of the nested dict with each `a.b.c=value` set."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = out
        for part in path[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override '{text}': '{part}' is a value, not a section")
            node = nxt
        node[path[-1]] = value
    return out


def flatten_mapping(data: Any, prefix: str = "") -> dict[str, Any]:
    """{dotted path: value} of every leaf of a nested mapping (an empty mapping is a leaf)."""
    if not isinstance(data, Mapping) or not data:
        return {prefix: data} if prefix else {}
    out: dict[str, Any] = {}
    for name, value in data.items():
        out.update(flatten_mapping(value, f"{prefix}.{name}" if prefix else str(name)))
    return out


def attribute_to_override(error: ConfigError, overrides: list[str]) -> ConfigError:
    """The same error, blamed on the command-line override that set its key (or a section above it), if any."""
    if error.key is None:
        return error
    for text in reversed(overrides):
        path = ".".join(parse_override(text)[0])
        if error.key == path or error.key.startswith(path + ".") or path.startswith(error.key + "."):
            return ConfigError(f"command-line override '{text}': key '{error.key}': {error.detail}",
                               file="<command line>", key=error.key, detail=error.detail)
    return error


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; `_base_: other.yaml` (relative to this file) is merged underneath."""
    path = resolve_config(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found; pass the path of a YAML file (see configs/)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    base = data.pop("_base_", None)
    if base:
        return deep_merge(read_yaml(path.parent / base), data)
    return data


def deep_merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)
