"""The README and the commands agree: every flag the README shows with a command exists in
that command's parser (a renamed or removed flag cannot linger in the docs)."""

from __future__ import annotations

import re

import pytest

from mlptrain.cli import compare, evaluate, export, predict, sweep, train

from .conftest import REPO

PARSERS = {
    "mlp-train": train.build_parser,
    "mlp-eval": evaluate.build_parser,
    "mlp-sweep": sweep.build_parser,
    "mlp-predict": predict.build_parser,
    "mlp-export": export.build_parser,
    "mlp-compare": compare.build_parser,
}
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def command_lines(text: str) -> list[tuple[str, str]]:
    """(command, the rest of its line) for each command shown in a code block or in an
    inline code span, continuation lines (ending in a backslash) joined."""
    text = re.sub(r"\\\n\s*", " ", text)
    found = []
    for line in text.splitlines():
        for span in re.findall(r"`([^`]+)`", line) or [line]:
            for match in re.finditer(r"(mlp-[a-z]+)((?:\s+[^\s|#;]+)*)", span):
                if match.group(1) in PARSERS:
                    found.append((match.group(1), match.group(2)))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: path.name)
def test_every_flag_shown_with_a_command_is_one_of_its_flags(doc):
    options = {name: set(build()._option_string_actions) for name, build in PARSERS.items()}
    unknown = sorted(
        {
            f"{command} {flag}"
            for command, rest in command_lines(doc.read_text(encoding="utf-8"))
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", rest)
            if flag not in options[command]
        }
    )
    assert unknown == []
