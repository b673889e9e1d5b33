"""mlp-sweep: parameter parsing, grid expansion, and whole sweeps as subprocesses."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlptrain.artifacts.checkpoint import load_checkpoint
from mlptrain.config.files import load_config
from mlptrain.errors import UsageError
from mlptrain.sweep.spec import grid_points, parse_grid, parse_param, split_top_level

from .conftest import config_document, run_cli, write_config, write_dataset


def test_values_split_outside_brackets_and_quotes():
    assert split_top_level("[128],[256, 128],'a,b',{x: 1, y: 2}") == [
        "[128]",
        "[256, 128]",
        "'a,b'",
        "{x: 1, y: 2}",
    ]


def test_grid_values_are_yaml():
    assert parse_grid("model.hidden=[128],[256,128]") == ("model.hidden", [[128], [256, 128]])
    assert parse_grid("optimizer.lr=1e-3,0.1") == ("optimizer.lr", [0.001, 0.1])
    assert parse_grid("optimizer.name=adam,sgd") == ("optimizer.name", ["adam", "sgd"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer.lr", "expects KEY=V1,V2"),
        ("optimizer.lr=", "expects KEY=V1,V2"),
        ("optimizer.lr=0.1,,0.2", "an empty value"),
        ("optimizer.lr=0.1,0.1", "listed twice"),
        ("model.hidden=[1,2", "malformed YAML"),
    ],
)
def test_bad_grids(text, message):
    with pytest.raises(UsageError, match=message):
        parse_grid(text)


def test_grid_expansion_is_the_cartesian_product():
    points = grid_points([parse_grid("a=1,2,3"), parse_grid("b=x,y")])
    assert len(points) == 6
    assert points[0] == {"a": 1, "b": "x"} and points[-1] == {"a": 3, "b": "y"}
    with pytest.raises(UsageError, match=r"^each key may appear in one --grid only$"):
        grid_points([parse_grid("a=1,2"), parse_grid("a=3,4")])


def test_param_specs():
    lr = parse_param("optimizer.lr=loguniform:1e-4:1e-1")
    assert (lr.key, lr.kind, lr.low, lr.high) == ("optimizer.lr", "loguniform", 1e-4, 0.1)
    hidden = parse_param("model.hidden=choice:[128],[256,128],[512,256]")
    assert hidden.examples() == [[128], [256, 128], [512, 256]]
    assert parse_param("training.batch_size=int:16:256").examples() == [16, 256]
    assert parse_param("model.dropout=uniform:0:0.5").high == 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("optimizer.lr=normal:0:1", "KIND one of"),
        ("optimizer.lr", "KIND one of"),
        ("optimizer.lr=loguniform:0:1", "LOW above 0"),
        ("optimizer.lr=uniform:1:0.5", "LOW must be below HIGH"),
        ("optimizer.lr=uniform:a:b", "two numbers"),
        ("training.batch_size=int:1.5:8", "whole numbers"),
        ("model.hidden=choice:[1],[1]", "listed twice"),
    ],
)
def test_bad_params(text, message):
    with pytest.raises(UsageError, match=message):
        parse_param(text)


# --- whole sweeps ---------------------------------------------------------------------------


def base_config(tmp_path: Path, source: Path, **training) -> Path:
    training = {"epochs": 2, "batch_size": 50, **training}
    document = config_document(tmp_path, source, "mnist", {"hidden": [16]}, **training)
    return write_config(tmp_path, document, "base.yaml")


def sweep(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run_cli("sweep", *args, cwd=cwd)


def results(folder: Path) -> list[dict[str, str]]:
    with open(folder / "results.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def sweep_folder(tmp_path: Path) -> Path:
    (folder,) = (tmp_path / "runs").glob("sweep-*")
    return folder


def is_png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow("an mlp-sweep process and a process per grid point")
def test_grid_sweep_writes_every_output(tmp_path, synthetic_source):
    config = base_config(tmp_path, synthetic_source)
    done = sweep(
        "--config",
        str(config),
        "--grid",
        "optimizer.lr=0.001,0.01",
        "--grid",
        "model.hidden=[8],[16,8]",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    folder = sweep_folder(tmp_path)
    rows = results(folder)
    assert len(rows) == 4
    assert {(row["optimizer.lr"], row["model.hidden"]) for row in rows} == {
        ("0.001", "[8]"),
        ("0.001", "[16, 8]"),
        ("0.01", "[8]"),
        ("0.01", "[16, 8]"),
    }
    assert all(row["status"] == "complete" and row["test_accuracy"] for row in rows)
    best = max(rows, key=lambda row: float(row["best_val_accuracy"]))
    table = (folder / "results.md").read_text().splitlines()
    assert f"| 1 | {best['trial']} |" in table[2]
    assert is_png(folder / "sweep.png") and is_png(folder / "curves.png")
    best_config = load_config(folder / "best_config.yaml")
    trial_config = load_config(Path(best["run_dir"]) / "config.yaml")
    assert trial_config.training.threads == max(1, (os.cpu_count() or 1) // 2)  # 2 workers
    assert best_config.training.threads is None  # a run on its own uses them all
    assert best_config.model == trial_config.model
    assert best_config.optimizer == trial_config.optimizer
    # Every trial is an ordinary run folder: mlp-eval works on it.
    checkpoint = load_checkpoint(Path(best["run_dir"]) / "best.pt")
    assert checkpoint["config"]["optimizer"]["lr"] == float(best["optimizer.lr"])


@pytest.mark.slow("an mlp-sweep process and a process per trial")
def test_a_failing_trial_is_recorded_and_the_sweep_goes_on(tmp_path, synthetic_source):
    config = base_config(tmp_path, synthetic_source)
    done = sweep("--config", str(config), "--grid", "data.subset.train=100,100000", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {row["data.subset.train"]: row for row in results(sweep_folder(tmp_path))}
    assert rows["100"]["status"] == "complete"
    assert rows["100000"]["status"] == "failed"
    assert "the training set has 500" in rows["100000"]["message"]


def test_bad_trial_configs_are_refused_before_anything_runs(tmp_path, synthetic_source):
    config = base_config(tmp_path, synthetic_source)
    done = sweep("--config", str(config), "--grid", "optimizer.lrr=0.1,0.2", cwd=tmp_path)
    assert done.returncode == 2
    assert "did you mean 'optimizer.lr'" in done.stderr
    done = sweep("--config", str(config), "--grid", "model.dropout=0.1,1.5", cwd=tmp_path)
    assert done.returncode == 2 and "model.dropout" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_optuna_missing_is_a_clear_error(tmp_path, synthetic_source):
    code = (
        "import sys; sys.modules['optuna'] = None; from mlptrain.cli.sweep import main; "
        f"sys.exit(main(['--config', {str(base_config(tmp_path, synthetic_source))!r}, "
        "'--search', 'optuna', '--trials', '2', '--param', 'optimizer.lr=uniform:0.1:0.2']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2
    assert "pip install 'mlptrain[sweep]'" in done.stderr


@pytest.mark.slow("an mlp-sweep process stopped by a real signal, then resumed")
def test_interrupted_grid_resumes_without_repeating_finished_trials(tmp_path, synthetic_source):
    config = base_config(tmp_path, synthetic_source, epochs=3)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlptrain.cli.sweep",
            "--config",
            str(config),
            "--grid",
            "optimizer.lr=0.001,0.002,0.003,0.004",
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ledgers = list((tmp_path / "runs").glob("sweep-*/trials.json"))
        if ledgers and '"complete"' in ledgers[0].read_text():
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    folder = sweep_folder(tmp_path)
    assert f"mlp-sweep --resume {folder}" in stderr
    before = json.loads((folder / "trials.json").read_text())["trials"]
    finished = {
        entry["number"]: entry["run_dir"] for entry in before if entry["status"] == "complete"
    }
    assert 1 <= len(finished) < 4

    done = sweep("--resume", str(folder), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    after = {int(row["trial"]): row for row in results(folder)}
    assert sorted(after) == [0, 1, 2, 3]
    assert all(row["status"] == "complete" for row in after.values())
    for number, run_dir in finished.items():
        assert after[number]["run_dir"] == run_dir  # not run again
    assert "already finished" in done.stdout


@pytest.mark.slow("an mlp-sweep process and a process per Optuna trial")
def test_optuna_search_with_pruning(tmp_path, synthetic_source):
    config = base_config(tmp_path, synthetic_source, epochs=3)
    done = sweep(
        "--config",
        str(config),
        "--search",
        "optuna",
        "--trials",
        "4",
        "--prune",
        "--param",
        "optimizer.lr=loguniform:1e-4:1e-1",
        "--param",
        "model.hidden=choice:[8],[16]",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    folder = sweep_folder(tmp_path)
    rows = results(folder)
    assert sorted(int(row["trial"]) for row in rows) == list(range(4))
    assert {row["status"] for row in rows} <= {"complete", "pruned"}
    assert all(row["model.hidden"] in ("[8]", "[16]") for row in rows)
    assert all(1e-4 <= float(row["optimizer.lr"]) <= 0.1 for row in rows)
    assert (folder / "study.db").exists() and (folder / "best_config.yaml").exists()


@pytest.mark.slow("enough Optuna trials on real data for the median rule to prune some")
def test_a_pruned_search_stops_the_trials_that_fall_behind(tmp_path):
    """Three good trials, then one that cannot learn (lr 1e-7): the median rule must stop
    it mid-run. The trials are enqueued in a shared study, so their order is fixed,
    and their epochs last long enough (3,000 images, batch 8) for the sweep to see them."""
    optuna = pytest.importorskip("optuna")
    source = write_dataset(tmp_path / "source" / "mnist", seed=5, train_count=3000).parent
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(storage=storage, study_name="prune", direction="maximize")
    for lr in (0.05, 0.05, 0.05, 1e-7):
        study.enqueue_trial({"optimizer.lr": lr})
    config = base_config(tmp_path, source, epochs=5, batch_size=8)
    done = sweep(
        "--config", str(config), "--search", "optuna", "--trials", "4", "--prune",
        "--param", "optimizer.lr=loguniform:1e-7:0.1",
        "--storage", storage, "--study", "prune", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = results(sweep_folder(tmp_path))
    statuses = {(float(row["optimizer.lr"]), row["status"]) for row in rows}
    assert statuses == {(0.05, "complete"), (1e-7, "pruned")}
    for row in rows:
        epochs = len((Path(row["run_dir"]) / "metrics.csv").read_text().splitlines()) - 1
        if row["status"] == "pruned":
            assert 2 <= epochs < 5  # stopped mid-run, from epoch 2 on, never at the last
        else:
            assert epochs == 5


@pytest.mark.slow("two mlp-sweep processes on one study, each with its trial processes")
def test_two_workers_share_one_study(tmp_path, synthetic_source):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    config = base_config(tmp_path, synthetic_source)
    command = [
        sys.executable,
        "-m",
        "mlptrain.cli.sweep",
        "--config",
        str(config),
        "--search",
        "optuna",
        "--trials",
        "4",
        "--param",
        "optimizer.lr=loguniform:1e-4:1e-1",
        "--storage",
        storage,
        "--study",
        "shared",
    ]
    machines = [tmp_path / "a", tmp_path / "b"]
    for machine in machines:
        machine.mkdir()
    processes = [
        subprocess.Popen(
            [*command, "--name", machine.name],
            cwd=machine,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for machine in machines
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
    ran = {}
    for machine in (tmp_path / "runs").glob("sweep-*"):
        for trial in (machine / "trials").iterdir():
            number = int(trial.name.split("-")[1])
            assert number not in ran, f"trial {number} ran twice"
            ran[number] = machine.name
    import optuna

    study = optuna.load_study(study_name="shared", storage=storage)
    states = [(t.number, t.state.name, t.user_attrs.get("outcome")) for t in study.trials]
    assert sorted(ran) == list(range(4)), (states, ran)
    assert len(set(ran.values())) == 2  # both sweeps took part
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(t.number for t in complete) == list(range(4))


def test_param_specs_round_trip_through_sweep_json():
    from mlptrain.sweep.settings import SweepSettings
    from mlptrain.sweep.spec import ParamSpec

    specs = [
        parse_param("optimizer.lr=loguniform:1e-4:1e-1"),
        parse_param("model.hidden=choice:[128],[256,128]"),
        parse_param("training.batch_size=logint:16:256"),
    ]
    for spec in specs:
        assert ParamSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert specs[1].to_dict() == {
        "key": "model.hidden",
        "kind": "choice",
        "low": None,
        "high": None,
        "choices": ["[128]", "[256, 128]"],
    }
    settings = SweepSettings(
        "optuna", [spec.key for spec in specs], seed=None, monitor="val_loss", params=specs,
        trials=7, prune=True, storage="sqlite:///x.db", study="s",
    )  # fmt: skip
    assert SweepSettings.from_dict(json.loads(json.dumps(settings.to_dict()))) == settings
    assert settings.total == 7 and settings.objective.direction == "minimize"
    assert settings.log_keys() == {"optimizer.lr", "training.batch_size"}


def test_grid_settings_plot_wide_ranges_on_a_log_scale_and_read_old_files():
    from mlptrain.sweep.settings import SweepSettings

    points = grid_points([parse_grid("optimizer.lr=0.001,0.1"), parse_grid("model.dropout=0,0.5")])
    grid = SweepSettings("grid", ["optimizer.lr", "model.dropout"], seed=1, points=points)
    assert grid.total == 4
    assert grid.log_keys() == {"optimizer.lr"}  # 100x; dropout starts at 0
    old = {"mode": "grid", "keys": ["a"], "workers": 2, "seed": 1, "points": [{"a": 1}]}
    assert SweepSettings.from_dict(old).monitor == "val_accuracy"  # written before monitors


def test_param_examples_stand_for_the_range_ends():
    assert parse_param("training.batch_size=logint:16:256").examples() == [16, 256]
    assert parse_param("optimizer.lr=uniform:0.1:0.5").examples() == [0.1, 0.5]
    assert parse_param("a=choice:x,'y'").examples() == ["x", "y"]
    assert parse_param(" a =int:1:4").key == "a"


def test_values_nest_and_keys_split_at_the_first_equals_sign():
    assert split_top_level("[[1,2],[3]],4") == ["[[1,2],[3]]", "4"]
    assert split_top_level("X,Y") == ["X", "Y"]  # letters never open a quote or a bracket
    assert split_top_level("'a,b',\"c,d\",e") == ["'a,b'", '"c,d"', "e"]
    assert split_top_level("(1,2),{a: [3,4]}") == ["(1,2)", "{a: [3,4]}"]
    assert parse_grid("data.source=/a=b,/c") == ("data.source", ["/a=b", "/c"])
    assert parse_param("a=choice:x=1,y").key == "a"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=1,2", "--grid expects KEY=V1,V2"),
        ("a=1,,2", "--grid 'a=1,,2': an empty value"),
    ],
)
def test_grid_messages_name_the_flag(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_grid(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("=uniform:0:1", "--param expects KEY=KIND:..., with KIND one of uniform, loguniform"),
        ("a=uniform", "--param expects KEY=KIND"),
        ("a=choice:1,,2", "--param 'a=1,,2': an empty value"),
        ("a=uniform:-inf:1", "LOW must be below HIGH, both finite"),
        ("a=uniform:0:inf", "LOW must be below HIGH, both finite"),
        ("a=uniform:1:1", "LOW must be below HIGH"),
    ],
)
def test_param_messages(text, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        parse_param(text)


def test_integer_params_give_integer_examples():
    for kind in ("int", "logint"):
        examples = parse_param(f"training.batch_size={kind}:16:256").examples()
        assert examples == [16, 256] and all(type(value) is int for value in examples)


def test_trial_parameters_become_set_flags_that_read_back_the_same():
    from mlptrain.config.files import parse_override
    from mlptrain.sweep.spec import overrides

    params = {"model.hidden": [256, 128], "optimizer.name": "sgd", "optimizer.lr": 1e-3}
    texts = overrides(params)
    assert texts == ["model.hidden=[256, 128]", 'optimizer.name="sgd"', "optimizer.lr=0.001"]
    assert {".".join(parse_override(t)[0]): parse_override(t)[1] for t in texts} == params


@pytest.mark.slow("an mlp-sweep process training groups of trials in their processes")
def test_a_stacked_grid_trains_each_shape_in_one_process(tmp_path, synthetic_source):
    """--stack: the 2 x 2 points of each width share one process; every trial still has
    its own ordinary run folder and results row, as without --stack."""
    config = base_config(tmp_path, synthetic_source)
    done = sweep(
        "--config", str(config), "--grid", "optimizer.lr=0.001,0.01", "--grid", "seed=1,2",
        "--grid", "model.hidden=[8],[16]", "--stack", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = sweep_folder(tmp_path)
    rows = results(folder)
    assert len(rows) == 8 and all(row["status"] == "complete" for row in rows)
    groups = sorted((folder / "specs").glob("*.json"))  # the trial specs
    assert len(groups) == 2  # one process per width
    for group in groups:
        members = json.loads(group.read_text())["members"]
        assert len(members) == 4
        hidden = {load_config(Path(m["run_dir"]) / "config.yaml").model.hidden[0] for m in members}
        assert len(hidden) == 1
    for row in rows:
        run = Path(row["run_dir"])
        trial = load_config(run / "config.yaml")
        assert trial.optimizer.lr == float(row["optimizer.lr"]) and trial.seed == int(row["seed"])
        assert "trained together with 3 other model(s)" in (run / "train.log").read_text()
        assert json.loads((run / "test_metrics.json").read_text())["accuracy"] == float(
            row["test_accuracy"]
        )


@pytest.mark.slow("an mlp-sweep process training batches of Optuna trials together")
def test_a_stacked_optuna_search_asks_trials_in_batches(tmp_path, synthetic_source):
    config = base_config(tmp_path, synthetic_source)
    done = sweep(
        "--config", str(config), "--search", "optuna", "--trials", "5", "--stack", "3",
        "--param", "optimizer.lr=loguniform:1e-4:1e-1", cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    folder = sweep_folder(tmp_path)
    rows = results(folder)
    assert sorted(int(row["trial"]) for row in rows) == list(range(5))
    assert all(row["status"] == "complete" for row in rows)
    specs = (folder / "specs").glob("*.json")
    sizes = sorted(len(json.loads(spec.read_text())["members"]) for spec in specs)
    assert sizes == [2, 3]  # 3 asked together, then the 2 the study still needed
    refused = sweep(
        "--config", str(config), "--search", "optuna", "--trials", "2", "--stack", "--prune",
        "--param", "optimizer.lr=loguniform:1e-4:1e-1", cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 2 and "--stack and --prune do not go together" in refused.stderr


@pytest.mark.parametrize(
    "flags",
    [["--grid", "seed=1,2"], ["--search", "optuna"], ["--heartbeat", "2"], ["--tensorboard"]],
)
def test_resume_refuses_every_flag_but_workers_and_devices(flags, tmp_path, capsys):
    """What --resume refuses is derived from the parser: every flag it does not take."""
    from mlptrain.cli.sweep import main as sweep_main

    assert sweep_main(["--resume", str(tmp_path / "sweep"), *flags]) == 2
    message = capsys.readouterr().err
    assert f"{flags[0]} cannot be used with it (only --workers and --devices)" in message
