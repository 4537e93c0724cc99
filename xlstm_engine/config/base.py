"""Config dataclasses that read (nested) dicts and YAML strictly: an unknown key or a wrong type is an error
that names its path."""

import copy
import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal


class ConfigMixin:
    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        """Build from a (nested) dict such as a parsed YAML. An unknown or misspelled key raises ValueError."""
        return from_dict(cls, d, cls.__name__)

    @classmethod
    def from_yaml(cls, text_or_path: str | Path):
        """Build from YAML text or a YAML file (needs PyYAML)."""
        is_path = isinstance(text_or_path, Path) or (
            "\n" not in text_or_path and text_or_path.endswith((".yaml", ".yml")))
        text = Path(text_or_path).read_text() if is_path else text_or_path
        data = load_yaml(text)
        return cls.from_dict({} if data is None else data)

    def to_dict(self) -> dict[str, Any]:
        """The public fields (no derived `_` fields), nested, as from_dict takes them."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if not f.name.startswith("_")}


def load_yaml(text: str):
    """Parse YAML text (needs PyYAML). `1e-3` reads as a float, as in YAML 1.2 (PyYAML's 1.1 rules give a string)."""
    try:
        import yaml
    except ImportError as e:
        raise ImportError("reading YAML needs PyYAML: pip install pyyaml") from e

    class Loader(yaml.SafeLoader):
        pass

    exponent_float = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", exponent_float, list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # safe: a SafeLoader subclass


def _plain(value):
    if isinstance(value, ConfigMixin):
        return value.to_dict()
    return copy.deepcopy(value)


def require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def from_dict(cls, d: Any, path: str):
    if not isinstance(d, dict):
        raise TypeError(f"{path}: expected a mapping of {cls.__name__} fields, got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    if unknown:
        known = sorted(name for name in fields if not name.startswith("_"))
        raise ValueError(f"{path}: unknown key(s) {unknown}; expected some of {known}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        nested = _config_class(hints[key])
        if nested is not None and value is not None:
            kwargs[key] = from_dict(nested, value, f"{path}.{key}")
        else:
            kwargs[key] = _check_type(value, hints[key], f"{path}.{key}")
    return cls(**kwargs)


def _config_class(hint) -> type | None:
    """The config dataclass inside a hint like `mLSTMBlockConfig | None`."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    return next((t for t in options if isinstance(t, type) and issubclass(t, ConfigMixin)), None)


def _check_type(value, hint, path: str):
    """Check a scalar against its field's hint (bool, int, float, str, Literal, list, dict, and unions of these)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union \
        else (hint,)
    for option in options:
        origin = typing.get_origin(option)
        if option is type(None) and value is None:
            return value
        if origin is Literal and value in typing.get_args(option):
            return value
        if option is bool and isinstance(value, bool):
            return value
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if option is str and isinstance(value, str):
            return value
        if (option is list or origin is list) and isinstance(value, list):
            return value
        if option is dict and isinstance(value, dict):
            return value
    expected = " or ".join(repr(typing.get_args(o)) if typing.get_origin(o) is Literal else getattr(o, "__name__",
                                                                                                    str(o))
                           for o in options)
    raise ValueError(f"{path}: got {value!r}, expected {expected}")
