"""Where an Optuna study lives: SQLite in the sweep folder (the default), a database
server that several machines share (PostgreSQL, MySQL), or a journal file on a shared
folder (`journal:PATH` or a path ending in `.journal`, Optuna's JournalStorage, which its
documentation gives for NFS-like folders where SQLite's locking is unsafe).

Every failure to reach the storage is a UsageError that shows the URL without its
password.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlptrain.errors import UsageError

JOURNAL_PREFIX = "journal:"
CREATE_ATTEMPTS = 6
JOURNAL_SUFFIX = ".journal"
# The package that provides each SQLAlchemy driver, for the `pip install` line.
DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "pymysql": "PyMySQL",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
}


def journal_path(url: str) -> Path | None:
    """The journal file a storage URL names, or None for a database URL."""
    if url.startswith(JOURNAL_PREFIX):
        return Path(url.removeprefix(JOURNAL_PREFIX)).expanduser()
    if url.endswith(JOURNAL_SUFFIX) and "://" not in url:
        return Path(url).expanduser()
    return None


def normalize(url: str) -> str:
    """The URL as the sweep records it: a journal path made absolute, others unchanged."""
    path = journal_path(url)
    return f"{JOURNAL_PREFIX}{path.resolve()}" if path is not None else url


def shown(url: str) -> str:
    """The URL for messages and logs: the password replaced by ***."""
    if journal_path(url) is not None:
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # a malformed URL: show its scheme only, never what may be a password
        return url.split("://", 1)[0] + "://..." if "://" in url else "(malformed storage URL)"


def check_driver(url: str) -> None:
    """A database URL must parse and its driver must import; say which package to install."""
    if journal_path(url) is not None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        raise UsageError(
            f"--storage {shown(url)} is not a storage URL ({exc}); use "
            "postgresql://USER@HOST:PORT/DB, sqlite:///PATH or journal:PATH"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError:
        package = DRIVER_PACKAGES.get(dialect.driver, dialect.driver)
        raise UsageError(
            f"--storage {shown(url)} needs the database driver {dialect.driver!r}, which is not "
            f"installed: pip install '{package}' (the sweep extra has psycopg for PostgreSQL: "
            "pip install 'mlptrain[sweep]')"
        ) from None


def open_storage(optuna: Any, url: str) -> Any:
    """An Optuna storage object for `url`; raises UsageError when it cannot be reached."""
    path = journal_path(url)
    if path is not None:
        if not path.parent.is_dir():
            raise UsageError(f"--storage {url}: the folder {path.parent} does not exist")
        journal = optuna.storages.journal
        return optuna.storages.JournalStorage(journal.JournalFileBackend(str(path)))
    check_driver(url)
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}  # a server restart is survived
    if url.startswith("sqlite:"):
        # Several processes may share one SQLite file: wait for its lock.
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    from sqlalchemy.exc import OperationalError

    for attempt in range(CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as exc:
            error = exc
            if isinstance(exc, OperationalError) and not creation_race(exc):
                break  # refused, wrong password, unknown database, no host, unwritable file
            time.sleep(0.5 * (attempt + 1))
    raise UsageError(f"cannot open the Optuna storage {shown(url)}: {reason(error)}") from None


def creation_race(exc: BaseException) -> bool:
    """Whether a database error comes from another machine creating the study's tables at
    the same moment: it passes once that machine is done. SQLite reports both the table the
    other created first and its write lock as OperationalError; PostgreSQL's duplicate table
    and duplicate row are other error classes, which are always retried."""
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "already exists" in text or "database is locked" in text


def reason(exc: BaseException) -> str:
    """The driver's own words for a database error, without SQLAlchemy's boilerplate."""
    cause = getattr(exc, "orig", None) or exc
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    text = next((line for line in lines if not line.startswith("(Background")), "")
    return text[:300] or type(cause).__name__


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise UsageError(
            "--search optuna needs the optuna package: pip install 'mlptrain[sweep]' "
            "(grid sweeps need nothing extra)"
        ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage raises when it cannot be reached: a database error (SQLAlchemy's, or
    Optuna's wrapping of one) or a file error."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    return (SQLAlchemyError, StorageInternalError, OSError)
