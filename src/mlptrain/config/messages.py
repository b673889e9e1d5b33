"""Config errors written for people: every problem at once, with did-you-mean hints.

Imports only the standard library and pydantic (no torch), like the schema it explains.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping, Sequence
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel


def describe_errors(
    errors: list[dict[str, Any]],
    schema: type[BaseModel],
    origins: Mapping[str, str] | None = None,
) -> list[str]:
    """One line per distinct problem in pydantic's `errors` against `schema`; with
    `origins` (dotted key -> file or flag that set it), each line names its source."""
    lines: list[str] = []
    for error in errors:
        key = ".".join(str(part) for part in error["loc"]) or "config"
        line = _describe_error(key, error, schema)
        source = _origin_of(key, origins or {})
        if source:
            line += f" (from {source})"
        if line not in lines:
            lines.append(line)
    return lines


def _origin_of(key: str, origins: Mapping[str, str]) -> str | None:
    """The source of `key` or of the nearest section above it that has one."""
    parts = key.split(".")
    for end in range(len(parts), 0, -1):
        source = origins.get(".".join(parts[:end]))
        if source:
            return source
    return None


def all_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted key of the schema, sections included (`data`, `data.subset.train`...)."""
    keys = []
    for name, field in model.model_fields.items():
        dotted = prefix + name
        keys.append(dotted)
        section = _section_type(field.annotation)
        if section is not None:
            keys.extend(all_keys(section, dotted + "."))
    return keys


def _section_type(annotation: Any) -> type[BaseModel] | None:
    candidates = get_args(annotation) if get_origin(annotation) in (Union, _UnionType) else ()
    for candidate in (annotation, *candidates):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


_UnionType = type(int | None)


def _describe_error(key: str, error: dict[str, Any], schema: type[BaseModel]) -> str:
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        return f"unknown key {key!r}{did_you_mean(key, all_keys(schema))}"
    if kind == "literal_error":
        allowed = re.findall(r"'([^']*)'", error["ctx"]["expected"])
        hint = did_you_mean(str(given), allowed)
        return f"{key}: {given!r} is not one of: {', '.join(allowed)}{hint}"
    if kind == "missing":
        return f"{key} is required"
    if kind == "string_pattern_mismatch":
        return f"{key}: {given!r} is not allowed here ({_PATTERN_HINTS.get(key, 'bad format')})"
    message = str(error["msg"]).removeprefix("Value error, ")
    message = message.replace("Input should be", "must be")
    if kind in ("model_type", "dict_type") and isinstance(given, (str, int, float, bool)):
        return f"{key} is a section of keys, not a value (got {given!r})"
    if kind == "value_error":  # from a model validator: the message names the values
        return f"{key}: {message}"
    return f"{key}: {message} (got {given!r})"


_PATTERN_HINTS = {
    "name": "letters, digits, '.', '_' and '-', starting with a letter or digit",
    "device": "use auto, cpu, cuda or cuda:N",
    "output.mlflow.tracking_uri": "a URI such as http://HOST:5000, file:/path or sqlite:///path",
    "output.mlflow.experiment": "a name without control characters",
}


def did_you_mean(given: str, choices: Sequence[str]) -> str:
    match = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    if not match:
        # A key put in the wrong section: `lr` -> `optimizer.lr`.
        last = given.rsplit(".", 1)[-1]
        match = [choice for choice in choices if choice.rsplit(".", 1)[-1] == last][:1]
    return f" (did you mean {match[0]!r}?)" if match else ""
