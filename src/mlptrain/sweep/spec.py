"""Parsing `--grid KEY=V1,V2` and `--param KEY=KIND:...`, and expanding grids.

Values are YAML, so `model.hidden=[128],[256,128]` holds two lists: commas split values
only outside brackets, braces and quotes.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any

from mlptrain.config.files import parse_override
from mlptrain.errors import UsageError

PARAM_KINDS = ("uniform", "loguniform", "int", "logint", "choice")


def split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside [], {}, () or quotes."""
    parts, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
        elif char == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return [part.strip() for part in parts]


def _key_and_values(text: str, flag: str) -> tuple[str, list[Any]]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise UsageError(f"{flag} expects KEY=V1,V2,... (e.g. optimizer.lr=0.01,0.1), got {text!r}")
    values = []
    for part in split_top_level(raw):
        if not part:
            raise UsageError(f"{flag} {text!r}: an empty value between commas")
        _, value = parse_override(f"{key.strip()}={part}")
        values.append(value)
    return key.strip(), values


def parse_grid(text: str) -> tuple[str, list[Any]]:
    """`KEY=V1,V2,...` -> (key, values); repeated values are an error."""
    key, values = _key_and_values(text, "--grid")
    encoded = [encode(value) for value in values]
    if len(set(encoded)) != len(encoded):
        raise UsageError(f"--grid {text!r}: a value is listed twice")
    return key, values


def grid_points(grid: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = [key for key, _ in grid]
    if len(set(keys)) != len(keys):
        raise UsageError("each key may appear in one --grid only")
    return [
        dict(zip(keys, values, strict=True)) for values in itertools.product(*(v for _, v in grid))
    ]


@dataclass(frozen=True)
class ParamSpec:
    """One searched parameter: a range (uniform, loguniform, int, logint) or choices."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()  # JSON-encoded values, as Optuna stores them

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "kind": self.kind,
            "low": self.low,
            "high": self.high,
            "choices": list(self.choices),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ParamSpec:
        return cls(data["key"], data["kind"], data["low"], data["high"], tuple(data["choices"]))

    def examples(self) -> list[Any]:
        """Values that stand for the whole range when validating against the schema."""
        if self.kind == "choice":
            return [decode(choice) for choice in self.choices]
        if self.kind in ("int", "logint"):
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def parse_param(text: str) -> ParamSpec:
    """`KEY=loguniform:1e-4:1e-1`, `uniform:A:B`, `int:A:B`, `logint:A:B`, `choice:V1,V2`."""
    key, sep, spec = text.partition("=")
    kind, colon, rest = spec.partition(":")
    key, kind = key.strip(), kind.strip()
    if not sep or not key or not colon or kind not in PARAM_KINDS:
        raise UsageError(
            f"--param expects KEY=KIND:..., with KIND one of {', '.join(PARAM_KINDS)} "
            f"(e.g. optimizer.lr=loguniform:1e-4:1e-1), got {text!r}"
        )
    if kind == "choice":
        _, values = _key_and_values(f"{key}={rest}", "--param")
        choices = tuple(encode(value) for value in values)
        if len(set(choices)) != len(choices):
            raise UsageError(f"--param {text!r}: a choice is listed twice")
        return ParamSpec(key, kind, choices=choices)
    bounds = rest.split(":")
    try:
        low, high = (float(bound) for bound in bounds)
    except ValueError:
        raise UsageError(f"--param {text!r}: {kind} needs two numbers, LOW:HIGH") from None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise UsageError(f"--param {text!r}: LOW must be below HIGH, both finite")
    if kind.startswith("log") and low <= 0:
        raise UsageError(f"--param {text!r}: a log scale needs LOW above 0")
    if kind.endswith("int") and (low != int(low) or high != int(high)):
        raise UsageError(f"--param {text!r}: {kind} needs whole numbers")
    return ParamSpec(key, kind, low, high)


def encode(value: Any) -> str:
    """A value as a `--set` VALUE and an Optuna choice: JSON, which YAML also reads."""
    return json.dumps(value)


def decode(text: str) -> Any:
    return json.loads(text)


def overrides(params: dict[str, Any]) -> list[str]:
    return [f"{key}={encode(value)}" for key, value in params.items()]
