"""Sweeps of several machines on one study: a real PostgreSQL server and a journal file,
two mlp-sweep processes, a machine killed mid-trial, a database that goes away, and
workers pinned to devices."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from . import postgres
from .conftest import config_document, run_cli, write_config

pytestmark = pytest.mark.slow(
    "a real PostgreSQL server or journal file shared by several mlp-sweep processes"
)
optuna = pytest.importorskip("optuna")
PARAM = "optimizer.lr=loguniform:1e-3:1e-1"


@pytest.fixture(scope="module")
def server():
    if not postgres.available():
        pytest.skip(postgres.MISSING)
    database = postgres.TemporaryPostgres().start()
    yield database
    database.stop()


@pytest.fixture
def base_config(tmp_path, synthetic_source) -> Path:
    document = config_document(tmp_path, synthetic_source, epochs=4)
    return write_config(tmp_path, document)


def _sweep_command(config: Path, runs: Path, storage: str, study: str, trials: int, *extra):
    return [
        sys.executable,
        "-m",
        "mlptrain.cli.sweep",
        "--config",
        str(config),
        "--set",
        f"output.runs_dir={runs}",
        "--search",
        "optuna",
        "--trials",
        str(trials),
        "--param",
        PARAM,
        "--storage",
        storage,
        "--study",
        study,
        *extra,
    ]


def _start(command: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(process: subprocess.Popen, timeout: float = 180) -> str:
    """The sweep's output once it has ended by itself; a sweep still running after
    `timeout` seconds (one that waits for ever) fails the test with what it printed."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(process.pid)
        output, _ = process.communicate()
        raise AssertionError(f"the sweep had not ended after {timeout:.0f} s:\n{output}") from None
    assert process.returncode == 0, output
    return output


def _folder(runs: Path) -> Path:
    (folder,) = runs.glob("sweep-*")
    return folder


def _result_numbers(folder: Path) -> list[int]:
    with open(folder / "results.csv", newline="") as handle:
        return sorted(int(row["trial"]) for row in csv.DictReader(handle))


def _recorded(storage, study: str) -> list:
    trials = optuna.load_study(study_name=study, storage=storage).get_trials()
    return [t for t in trials if t.user_attrs.get("outcome") in ("complete", "failed", "pruned")]


@pytest.fixture(params=["postgresql", "journal"])
def shared(request, tmp_path):
    """A storage URL that two "machines" share: a PostgreSQL database, a journal file."""
    if request.param == "journal":
        return f"journal:{tmp_path / 'study.journal'}"
    return request.getfixturevalue("server").create_database(f"study_{time.time_ns()}")


def test_two_machines_share_one_study(shared, base_config, tmp_path):
    url = shared
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    processes = [
        _start(_sweep_command(base_config, runs, url, "shared", 4), tmp_path)
        for runs in (first, second)
    ]
    for process in processes:
        _finish(process)
    recorded = _recorded(_optuna_storage(url), "shared")
    assert len(recorded) == 4
    numbers = [trial.number for trial in recorded]
    assert len(set(numbers)) == 4  # no trial number twice
    for runs in (first, second):  # each folder's results list the whole study
        assert _result_numbers(_folder(runs)) == sorted(numbers)
    ran_here = [len(list((_folder(runs) / "trials").iterdir())) for runs in (first, second)]
    assert sum(ran_here) == 4 and min(ran_here) >= 1  # both machines did work


# Each machine opens every storage at its round's instant and prints one line per round.
OPEN_AT_ONCE = """
import sys, time, optuna
from mlptrain.errors import UsageError
from mlptrain.sweep.storage import open_storage
for url, start in zip(sys.argv[1::2], sys.argv[2::2]):
    while time.time() < float(start):
        pass
    try:
        open_storage(optuna, url)
        print("ok", flush=True)
    except UsageError as exc:
        print(exc, flush=True)
"""


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_machines_starting_at_once_on_an_empty_database_all_get_in(kind, tmp_path, request):
    """Four machines create the tables of one empty database at the same instant, in ten
    rounds. Before the fix, SQLite's "table ... already exists" ended about 4 rounds in 10
    with exit 2 on some machine."""
    rounds, machines = 10, 4
    if kind == "sqlite":
        urls = [f"sqlite:///{tmp_path / f'round{n}.db'}" for n in range(rounds)]
    else:
        server = request.getfixturevalue("server")
        urls = [server.create_database(f"race_{n}_{time.time_ns()}") for n in range(rounds)]
    first = time.time() + 8  # every machine has imported optuna by then
    arguments = [str(a) for n, url in enumerate(urls) for a in (url, first + 0.4 * n)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, *arguments],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(machines)
    ]
    for process in processes:
        output, _ = process.communicate(timeout=120)
        assert process.returncode == 0, output
        assert output.splitlines() == ["ok"] * rounds, output
    for url in urls:  # one schema that works: a study made on it is seen by a fresh opener
        optuna.create_study(study_name="after", storage=_optuna_storage(url))
        assert optuna.load_study(study_name="after", storage=_optuna_storage(url))


def _optuna_storage(url: str):
    from mlptrain.sweep.storage import open_storage

    return open_storage(optuna, url)


def _kill_tree(pid: int) -> None:
    """SIGKILL a process and everything it started: a machine that dies."""
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for child in children.split():
        _kill_tree(int(child))
    os.kill(pid, signal.SIGKILL)


def _wait_mid_trial(runs: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for metrics in runs.glob("sweep-*/trials/*/metrics.csv"):
            finished = (metrics.parent / "test_metrics.json").exists()
            if not finished and len(metrics.read_text().splitlines()) >= 2:  # one epoch in
                return
        time.sleep(0.1)
    raise AssertionError("no trial of the machine to kill got going")


def test_a_machine_killed_mid_trial_is_retried_elsewhere_and_resumes(shared, base_config, tmp_path):
    url = shared
    victim_runs, survivor_runs = tmp_path / "victim", tmp_path / "survivor"
    timing = ("--heartbeat", "0.5", "--grace", "5")
    victim = _start(_sweep_command(base_config, victim_runs, url, "fault", 4, *timing), tmp_path)
    _wait_mid_trial(victim_runs)
    survivor = _start(
        _sweep_command(base_config, survivor_runs, url, "fault", 4, *timing), tmp_path
    )
    _kill_tree(victim.pid)
    victim.wait(timeout=30)
    output = _finish(survivor)
    assert "its parameters are queued again" in output

    storage = _optuna_storage(url)
    trials = optuna.load_study(study_name="fault", storage=storage).get_trials()
    killed = [t for t in trials if t.state.name == "FAIL" and "outcome" not in t.user_attrs]
    assert len(killed) == 1  # the victim's trial did not stay RUNNING
    retry = [t for t in trials if t.user_attrs.get("retry_of") == killed[0].number]
    assert len(retry) == 1 and retry[0].params == killed[0].params
    assert retry[0].user_attrs["outcome"] == "complete"
    assert len(_recorded(storage, "fault")) == 4
    assert not [t for t in trials if t.state.name == "RUNNING"]

    resumed = run_cli("sweep", "--resume", str(_folder(victim_runs)), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert len(_recorded(storage, "fault")) == 4  # nothing more ran, nothing was lost
    numbers = sorted(t.number for t in _recorded(storage, "fault"))
    assert _result_numbers(_folder(victim_runs)) == numbers
    assert _result_numbers(_folder(survivor_runs)) == numbers


def test_a_trial_left_running_by_a_dead_machine_does_not_hold_the_sweep(base_config, tmp_path):
    """A study holds a trial that a machine died in (RUNNING, its last heartbeat long ago).
    A sweep that needs that place must retire it after --grace and run its parameters
    again, and end by itself, within a bounded wait."""
    url = f"journal:{tmp_path / 'study.journal'}"
    study = optuna.create_study(storage=_optuna_storage(url), study_name="orphan",
                                direction="maximize")  # fmt: skip
    distributions = {"optimizer.lr": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    orphan = study.ask(distributions)
    orphan.set_user_attr("heartbeat", time.time() - 3600)
    orphan.set_user_attr("sweep_dir", str(tmp_path / "dead-machine"))
    timing = ("--heartbeat", "0.5", "--grace", "3")
    command = _sweep_command(base_config, tmp_path / "runs", url, "orphan", 2, *timing)
    started = time.monotonic()
    output = _finish(_start(command, tmp_path), timeout=120)
    assert "its parameters are queued again" in output
    assert time.monotonic() - started < 120
    trials = optuna.load_study(study_name="orphan", storage=_optuna_storage(url)).get_trials()
    assert trials[orphan.number].state.name == "FAIL"
    retry = [t for t in trials if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retry) == 1 and retry[0].user_attrs["outcome"] == "complete"
    assert not [t for t in trials if t.state.name == "RUNNING"]


def test_an_unreachable_or_refusing_database_is_exit_2_before_anything(
    server, base_config, tmp_path
):
    url = server.create_database("refusing")
    cases = {
        url.replace(postgres.PASSWORD, "wrong-password"): "password authentication failed",
        server.url("refusing", port=1): "Connection refused",
    }
    for bad, reason in cases.items():
        runs = tmp_path / "runs"
        result = subprocess.run(
            _sweep_command(base_config, runs, bad, "s", 2),
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 2, result.stderr
        assert reason in result.stderr
        assert "postgresql://mlptrain:***@127.0.0.1" in result.stderr
        assert "wrong-password" not in result.stderr and postgres.PASSWORD not in result.stderr
        assert not runs.exists()  # no sweep folder, no trial


def test_a_missing_driver_names_the_package(base_config, tmp_path):
    command = _sweep_command(base_config, tmp_path / "runs", "postgresql://u@127.0.0.1/db", "s", 2)
    code = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if psycopg were not installed
        "from mlptrain.cli.sweep import main\n"
        f"sys.exit(main({command[3:]!r}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert "pip install 'psycopg[binary]'" in result.stderr


def test_a_database_lost_mid_sweep_keeps_the_trial_and_resumes(base_config, tmp_path):
    if not postgres.available():
        pytest.skip(postgres.MISSING)
    server = postgres.TemporaryPostgres().start()  # its own: this test stops it
    try:
        url = server.create_database("lost")
        runs = tmp_path / "runs"
        sweep = _start(_sweep_command(base_config, runs, url, "lost", 2), tmp_path)
        _wait_mid_trial(runs)
        server.stop_server()
        output, _ = sweep.communicate(timeout=300)
        assert sweep.returncode == 2, output
        assert "lost the Optuna storage postgresql://mlptrain:***@" in output
        assert "Traceback" not in output
        folder = _folder(runs)
        (trial_dir,) = (folder / "trials").iterdir()
        assert (trial_dir / "test_metrics.json").exists()  # the running trial finished

        server.launch()
        resumed = run_cli("sweep", "--resume", str(folder), cwd=tmp_path)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert "finished while the sweep was away" in resumed.stderr + resumed.stdout
        recorded = _recorded(_optuna_storage(url), "lost")
        assert len(recorded) == 2
        assert [t.user_attrs["run_dir"] for t in recorded].count(str(trial_dir)) == 1
    finally:
        server.stop()


def test_workers_pinned_to_devices(tmp_path, synthetic_source):
    document = config_document(tmp_path, synthetic_source, epochs=1)
    document["device"] = "auto"
    config = write_config(tmp_path, document)
    result = run_cli(
        "sweep",
        "--config",
        str(config),
        "--grid",
        "seed=1,2,3",
        "--devices",
        "cpu,cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    (folder,) = (tmp_path / "runs").glob("sweep-*")
    log = (folder / "sweep.log").read_text()
    assert "2 worker(s)" in log and "on cpu, cpu" in log  # --workers follows the devices
    for trial in (folder / "trials").iterdir():
        assert "device: cpu" in (trial / "config.yaml").read_text()  # pinned, not "auto"
        assert f"{trial.name} starts on cpu" in log


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--devices", "auto"], "no visible CUDA GPU"),
        (["--devices", "tpu"], "'tpu' is not a device"),
        (["--devices", "cuda:3"], "cuda:3 does not exist here"),
        (["--devices", "cpu,cpu", "--workers", "3"], "each worker needs its own"),
    ],
)
def test_bad_devices_are_exit_2(flags, message, tmp_path, synthetic_source):
    config = write_config(tmp_path, config_document(tmp_path, synthetic_source, epochs=1))
    result = run_cli("sweep", "--config", str(config), "--grid", "seed=1,2", *flags, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert not list(tmp_path.glob("runs/sweep-*"))  # refused before the sweep folder
