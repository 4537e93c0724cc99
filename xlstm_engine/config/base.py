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
        """Build from YAML text or a YAML file (needs PyYAML); `yaml_text` tells which."""
        data = load_yaml(yaml_text(text_or_path))
        return cls.from_dict({} if data is None else data)

    def to_dict(self) -> dict[str, Any]:
        """The public fields (no derived `_` fields), nested, as from_dict takes them."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if not f.name.startswith("_")}


def yaml_text(source: str | Path) -> str:
    """The YAML text of `source`. A Path, or a string naming an existing file, is read, whatever its suffix; a
    string with a newline, an empty one, or one line of `key: value` (or `{...}`) that names no .yaml/.yml file,
    is YAML text; any other string is the path of a missing file: ValueError "no such config file"."""
    if isinstance(source, str):
        one_line_yaml = (": " in source or source.lstrip().startswith("{")) \
            and Path(source).suffix.lower() not in (".yaml", ".yml") and not _is_file(source)
        if "\n" in source or not source.strip() or one_line_yaml:
            return source
        source = Path(source)
    require(_is_file(source), f"no such config file: {str(source)!r}")
    return source.read_text()


def _is_file(path: str | Path) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # YAML text can be too long for a file name
        return False


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
    """Raise ValueError(message) unless `condition`: the one way configs validate a value."""
    if not condition:
        raise ValueError(message)


def from_dict(cls, d: Any, path: str):
    if not isinstance(d, dict):
        raise TypeError(f"{path}: expected a mapping of {cls.__name__} fields, got {type(d).__name__}")
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - fields)
    require(not unknown, f"{path}: unknown key(s) {unknown}; expected some of "
            f"{sorted(name for name in fields if not name.startswith('_'))}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in d.items():
        nested = config_class(hints[key])
        if nested is not None and value is not None:
            kwargs[key] = from_dict(nested, value, f"{path}.{key}")
        else:
            kwargs[key] = check_type(value, hints[key], f"{path}.{key}")
    return cls(**kwargs)


def config_class(hint) -> type | None:
    """The config dataclass inside a hint like `mLSTMBlockConfig | None`."""
    return next((t for t in _options(hint) if isinstance(t, type) and issubclass(t, ConfigMixin)), None)


def _options(hint) -> tuple:
    """The alternatives of a union hint (`int | None` -> (int, NoneType)); any other hint alone."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    return (hint,)


def fits(value, hint) -> bool:
    """Whether `value` has the type `hint` names: bool, int, float (an int too), str, Literal, list[X], tuple[X, ...],
    dict, a config class, None, or a union of these. A bool is not an int here, and a string is never a bool."""
    options = _options(hint)
    if len(options) > 1:
        return any(fits(value, option) for option in options)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        return value in args
    if origin in (list, tuple):  # list[X] and tuple[X, ...]: every element an X
        return isinstance(value, origin) and all(fits(v, args[0]) for v in value)
    if hint is type(None):
        return value is None
    if hint in (int, float):
        return isinstance(value, int | float if hint is float else int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint) -> str:
    """`int or tuple[int, ...] or None`, `('all',) or list[int]`: the hint as an error message names it."""
    return " or ".join(repr(typing.get_args(o)) if typing.get_origin(o) is Literal else "None" if o is type(None)
                       else str(o) if typing.get_origin(o) else getattr(o, "__name__", str(o)) for o in _options(hint))


def check_type(value, hint, path: str):
    """Check a scalar against its field's hint; an int for a float field becomes a float."""
    require(fits(value, hint), f"{path}: got {value!r}, expected {_describe(hint)}")
    if float in _options(hint) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def check_field_types(config) -> None:
    """Raise ValueError unless every public field of the dataclass `config` holds a value of its annotated type.

    Called on construction, so a config built directly (not through from_dict) is checked too: a YAML or JSON
    string such as "false" would otherwise count as true in a bool field.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        if not f.name.startswith("_"):
            require(fits(getattr(config, f.name), hints[f.name]), f"{type(config).__name__}.{f.name}: got "
                    f"{getattr(config, f.name)!r}, expected {_describe(hints[f.name])}")
