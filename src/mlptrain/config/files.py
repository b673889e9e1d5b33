"""Config files: YAML read (numbers as users mean them, duplicate keys refused), dotted
`--set` overrides, files layered key by key with the origin of each key kept, and a
Config written back as YAML. Validation against the schema is config.py's.

Imports only the standard library, yaml and pydantic, so that a bad config is
reported before torch is loaded.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from mlptrain.config.presets import locate
from mlptrain.config.schema import Config, validate
from mlptrain.errors import UsageError

# --- YAML -------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a number and refuses duplicate keys."""


# PyYAML follows YAML 1.1, where `1e-3` (no dot) is a string; users mean a number.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _parse_yaml(text: str, origin: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UsageError(f"{origin}: malformed YAML{where}: {problem}") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a plain dict (not yet validated)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise UsageError(f"config path is a folder, not a file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read config file {path}: {exc}") from None
    document = _parse_yaml(text, str(path))
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise UsageError(
            f"{path}: the top level must be a mapping of keys (name:, data:, model:, ...), "
            f"not a {type(document).__name__}"
        )
    return document


# --- overrides --------------------------------------------------------------------------


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=VALUE` into its key path and its YAML-parsed value."""
    key, sep, raw_value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise UsageError(f"--set expects KEY=VALUE (e.g. optimizer.lr=0.01), got {text!r}")
    parts = key.split(".")
    if any(not part for part in parts):
        raise UsageError(f"--set {text!r}: the key {key!r} has an empty part")
    value = _parse_yaml(raw_value, f"--set {text!r}") if raw_value.strip() else None
    return parts, value


def apply_overrides(document: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Return a copy of `document` with every `KEY=VALUE` override applied in order."""
    result = copy.deepcopy(document)
    for text in overrides:
        parts, value = parse_override(text)
        set_key(result, parts, value, f"--set {text!r}")
    return result


def set_key(document: dict[str, Any], parts: Sequence[str], value: Any, origin: str) -> None:
    """Set a dotted key in a plain config dict, creating missing sections."""
    node = document
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, dict):
            raise UsageError(f"{origin}: {'.'.join(parts[: depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


ConfigSource = str | Path


def load_config(
    config: ConfigSource | Sequence[ConfigSource] | None,
    overrides: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
) -> Config:
    """Read config files (or start from the defaults), apply overrides, validate.

    `config` is a path or a shipped name (`fashion`), or several: later files override
    earlier ones key by key (sections merge, lists and values replace). `overrides` and
    `settings` as for build_config. An error names the file or flag its key came from
    when there is more than one.
    """
    sources = [] if config is None else [config] if isinstance(config, (str, Path)) else config
    layers = [(str(source), read_config_file(locate(source))) for source in sources]
    return build_config(layers, overrides, settings)


def build_config(
    layers: Sequence[tuple[str, Mapping[str, Any]]],
    overrides: Sequence[str] = (),
    settings: Mapping[str, Any] | None = None,
    origin: str | None = None,
) -> Config:
    """The one way from plain documents to a Config: `layers` (name, document) merged in
    order, then `overrides` (`KEY=VALUE` strings, values parsed as YAML), then `settings`
    (dotted keys to values already parsed, from dedicated flags such as --name),
    validated. `origin` names the whole in an error (default: the layers' names)."""
    document, origins = merge_layers(layers)
    for text in overrides:
        parts, value = parse_override(text)
        _set_traced(document, origins, parts, value, f"--set {text!r}")
    for key, value in (settings or {}).items():
        _set_traced(document, origins, key.split("."), value, "command line")
    if origin is None:
        origin = "config " + " + ".join(name for name, _ in layers) if layers else "config"
        if overrides or settings:
            origin += " with command-line overrides"
    traced = origins if len(layers) + len(overrides) + len(settings or {}) > 1 else None
    config = validate(document, origin, traced)
    if config.ensemble is not None:
        ensemble_configs(config)  # a member that does not validate is the config's error
    return config


def ensemble_configs(config: Config) -> list[Config]:
    """The members of `config.ensemble`, each an ordinary config: the base without its
    ensemble key, with the member's seed or its keys (a member without a seed gets the
    base seed plus its position). Seeds must differ: they name the members' folders."""
    ensemble = config.ensemble
    if ensemble is None:
        raise ValueError("the config has no ensemble")
    base = config_to_dict(config)
    del base["ensemble"]
    entries = ensemble.members or [{"seed": seed} for seed in ensemble.seeds or ()]
    members = []
    for number, entry in enumerate(entries, 1):
        if "ensemble" in entry:
            raise UsageError(f"ensemble member {number}: a member cannot hold an ensemble")
        layers = [("base", base), ("member", {"seed": config.seed + number - 1}), ("m", entry)]
        document, _ = merge_layers(layers)
        members.append(validate(document, f"ensemble member {number} ({entry})"))
    seeds = [member.seed for member in members]
    if len(set(seeds)) != len(seeds):
        raise UsageError(
            f"ensemble members need distinct seeds (they name their folders), got {seeds}"
        )
    return members


def merge_layers(
    layers: Sequence[tuple[str, Mapping[str, Any]]],
) -> tuple[dict[str, Any], dict[str, str]]:
    """Merge config documents in order; also return which layer set each dotted key."""
    document: dict[str, Any] = {}
    origins: dict[str, str] = {}

    def merge(target: dict[str, Any], layer: Mapping[str, Any], origin: str, prefix: str):
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                merge(target[key], value, origin, f"{prefix}{key}.")
            else:
                _record(origins, f"{prefix}{key}", origin)
                target[key] = copy.deepcopy(value)

    for origin, layer in layers:
        merge(document, layer, origin, "")
    return document, origins


def _set_traced(
    document: dict[str, Any], origins: dict[str, str], parts: list[str], value: Any, origin: str
) -> None:
    set_key(document, parts, value, origin)
    _record(origins, ".".join(parts), origin)


def _record(origins: dict[str, str], dotted: str, origin: str) -> None:
    """`dotted` (and everything under it) now comes from `origin`."""
    for key in [key for key in origins if key.startswith(dotted + ".")]:
        del origins[key]
    origins[dotted] = origin


def config_to_dict(config: Config) -> dict[str, Any]:
    return config.model_dump(mode="json")


def flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a.b": value} for every leaf of a nested config dict (sections are not leaves)."""
    flat: dict[str, Any] = {}
    for key, value in document.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


class _Dumper(yaml.SafeDumper):
    """Block-style sections with short lists on one line (`hidden: [256, 128]`)."""


_Dumper.add_representer(
    list, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:seq", data, True)
)


def config_to_yaml(config: Config) -> str:
    return yaml.dump(config_to_dict(config), Dumper=_Dumper, sort_keys=False)
