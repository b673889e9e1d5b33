"""The README and the commands agree: every flag the README shows with a command exists in
that command's parser (a renamed or removed flag cannot linger in the docs)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys

import pytest

from mlptrain.cli import train

from .conftest import REPO


def _reference_script():
    spec = importlib.util.spec_from_file_location(
        "make_reference", REPO / "scripts" / "make_reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PARSERS = _reference_script().COMMANDS  # every command's parser, as the reference shows it
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


def test_every_installed_command_is_in_the_reference():
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert sorted(PARSERS) == sorted(scripts)


def test_the_reference_pages_are_what_the_code_writes_now():
    """docs/reference/ is written from the schema and the parsers: a key or flag added
    without `python scripts/make_reference.py` fails here."""
    for path, text in _reference_script().pages().items():
        assert path.is_file(), f"{path} is missing: run python scripts/make_reference.py"
        assert path.read_text(encoding="utf-8") == text, (
            f"{path.relative_to(REPO)} differs from the code: run python scripts/make_reference.py"
        )


def test_the_site_builds_in_strict_mode(tmp_path):
    """make docs: a broken link, a missing page or a page left out of the navigation fails."""
    pytest.importorskip("mkdocs")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").is_file()


def getting_started_commands() -> list[list[str]]:
    """The commands a user types in docs/getting-started.md's code blocks."""
    text = (REPO / "docs" / "getting-started.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = shlex.split(line.split("  #")[0])
            while words and "=" in words[0] and not words[0].startswith("-"):
                words = words[1:]  # VAR=value before the command
            if words and words[0] in PARSERS:
                commands.append(words)
    return commands


def test_the_getting_started_commands_parse_and_resolve(tmp_path, synthetic_source, monkeypatch):
    """Every command of the getting-started page parses; each mlp-train line resolves its
    config (run with --print-config, so a stale key or flag fails), and the listing and
    version lines run."""
    commands = getting_started_commands()
    assert len(commands) >= 6
    (tmp_path / "local.yaml").write_text(f"data: {{source: {synthetic_source}}}\n")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    for words in commands:
        words = [word.replace("/path/to/datasets", str(synthetic_source)) for word in words]
        try:
            PARSERS[words[0]]().parse_args(words[1:])
        except SystemExit as exc:  # --list-configs and --version print, then exit 0
            assert exc.code == 0, words
            continue
        if words[0] == "mlp-train":
            arguments = (
                [*words[1:], "--print-config"] if "--print-config" not in words else words[1:]
            )
            assert train.main(arguments) == 0, words


def test_every_link_of_the_readme_leads_somewhere():
    """README.md is not part of the site, so the strict build does not check its links."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert len(targets) >= 10
    missing = [t for t in targets if "://" not in t and not (REPO / t).exists()]
    assert missing == []
