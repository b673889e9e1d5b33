"""Storage URLs of a sweep: journal paths, passwords kept out of messages, bad URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlptrain.errors import UsageError
from mlptrain.sweep.storage import check_driver, journal_path, normalize, shown


def test_a_journal_is_named_by_its_prefix_or_its_suffix(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert journal_path("journal:studies/a.log") == Path("studies/a.log")
    assert journal_path("studies/a.journal") == Path("studies/a.journal")
    assert journal_path("postgresql://u@h/db") is None
    assert journal_path("sqlite:///x.journal") is None  # a URL, not a path
    # Recorded absolute, so a resumed sweep finds it from any folder.
    assert normalize("studies/a.journal") == f"journal:{tmp_path / 'studies/a.journal'}"
    assert normalize("postgresql://u@h/db") == "postgresql://u@h/db"


def test_a_password_never_reaches_a_message():
    assert shown("postgresql://me:hunter2@db:5432/optuna") == "postgresql://me:***@db:5432/optuna"
    assert "hunter2" not in shown("postgresql://me:hunter2@db:notaport/optuna")


def test_a_malformed_url_is_a_usage_error():
    with pytest.raises(UsageError, match="is not a storage URL"):
        check_driver("nosuchdb://u@h/db")
