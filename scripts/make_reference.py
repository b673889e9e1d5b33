"""Write the reference pages from the code: docs/reference/configuration.md from the config
schema (every key, its type, default, limits and description) and docs/reference/commands.md
from each command's argument parser (every flag and its help).

    python scripts/make_reference.py            # rewrite both pages
    python scripts/make_reference.py --check    # exit 1 when a page differs from the code

tests/test_docs.py fails when a committed page differs from what this writes, so a new
config key or flag cannot ship undocumented.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from mlptrain.cli import compare, evaluate, export, predict, serve, sweep, train
from mlptrain.config.schema import Config

REPO = Path(__file__).resolve().parents[1]
PAGES = {
    "configuration": REPO / "docs" / "reference" / "configuration.md",
    "commands": REPO / "docs" / "reference" / "commands.md",
}
COMMANDS = {
    "mlp-train": train.build_parser,
    "mlp-eval": evaluate.build_parser,
    "mlp-predict": predict.build_parser,
    "mlp-compare": compare.build_parser,
    "mlp-sweep": sweep.build_parser,
    "mlp-export": export.build_parser,
    "mlp-serve": serve.build_parser,
}
LIMITS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}",
          "min_length": "at least {} long", "max_length": "at most {} long"}  # fmt: skip
GENERATED = "<!-- Written by scripts/make_reference.py from the code; do not edit by hand. -->"


def _section(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin in (typing.Union, type(int | None)):
        kinds = [_type(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is tuple:
        return "[" + ", ".join(_type(arg) for arg in args) + "]"
    if origin is list:
        return f"list of {_type(args[0])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        value = value.model_dump(mode="json") if isinstance(value, BaseModel) else value
        return "" if isinstance(value, dict) else f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{json.dumps(field.default)}`"


def _limits(field: FieldInfo) -> str:
    found = []
    for item in field.metadata:
        for name, text in LIMITS.items():
            if getattr(item, name, None) is not None:
                found.append(text.format(getattr(item, name)))
        if getattr(item, "pattern", None):
            found.append(f"matches `{item.pattern}`")
    return "; ".join(found)


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, field in model.model_fields.items():
        key = prefix + name
        if not field.description:
            raise SystemExit(f"the config key {key} has no description in the schema")
        cells = [f"`{key}`", _type(field.annotation), _default(field), _limits(field)]
        rows.append(_row([*cells, field.description]))
        section = _section(field.annotation)
        if section is not None:
            rows.extend(_rows(section, key + "."))
    return rows


def configuration_page() -> str:
    lines = [
        "# Configuration reference",
        "",
        GENERATED,
        "",
        "Every key of a config file, with its default. A file states only what differs; "
        "unknown keys, wrong types and values out of their limits are refused before anything "
        "is loaded, with the key named. Sections are nested YAML mappings; a key is also "
        "`--set KEY=VALUE` on the command line.",
        "",
        "| key | type | default | limits | meaning |",
        "|---|---|---|---|---|",
        *_rows(Config),
    ]
    return "\n".join(lines) + "\n"


def _flag_row(action: argparse.Action) -> str:
    flags = ", ".join(f"`{flag}`" for flag in action.option_strings) or f"`{action.dest}`"
    if action.nargs == 0 or action.option_strings == []:
        takes = ""
    else:
        takes = f"`{action.metavar or action.dest.upper()}`"
    default = action.default
    shown = "" if default in (None, False, [], argparse.SUPPRESS) else f"`{default}`"
    help_text = (action.help or "").replace("\n", " ")
    if isinstance(action.choices, (list, tuple)) and action.choices:
        help_text += " (" + ", ".join(str(choice) for choice in action.choices) + ")"
    return _row([flags, takes, shown, help_text])


def _row(cells: list[str]) -> str:
    """A Markdown table row; a `|` inside a cell is escaped."""
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def commands_page() -> str:
    lines = ["# Commands reference", "", GENERATED, ""]
    for name, build in COMMANDS.items():
        parser = build()
        lines += [f"## {name}", "", (parser.description or "").strip(), ""]
        lines += ["| flag | takes | default | meaning |", "|---|---|---|---|"]
        lines += [
            _flag_row(action)
            for action in parser._actions
            if not isinstance(action, argparse._HelpAction)
        ]
        lines.append("")
    return "\n".join(lines)


def pages() -> dict[Path, str]:
    return {PAGES["configuration"]: configuration_page(), PAGES["commands"]: commands_page()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, write nothing")
    args = parser.parse_args(argv)
    stale = []
    for path, text in pages().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    for path in stale:
        verb = "differs from the code" if args.check else "written"
        print(f"{path.relative_to(REPO)}: {verb}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
