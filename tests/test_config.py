from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from mlptrain.config.files import (
    apply_overrides,
    config_to_dict,
    config_to_yaml,
    flatten,
    load_config,
    parse_override,
)
from mlptrain.config.messages import all_keys
from mlptrain.config.schema import ACTIVATIONS, Config, validate
from mlptrain.errors import UsageError

from .conftest import REPO, run_cli


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def error_of(document: dict) -> str:
    with pytest.raises(UsageError) as caught:
        validate(document)
    return str(caught.value)


@pytest.mark.parametrize("path", sorted((REPO / "configs").rglob("*.yaml")), ids=str)
def test_every_shipped_config_loads(path: Path) -> None:
    assert isinstance(load_config(path), Config)


def test_a_file_states_only_what_differs(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "optimizer:\n  lr: 0.01\n"))
    assert config.optimizer.lr == 0.01
    assert config.optimizer.name == Config().optimizer.name
    assert config.model == Config().model


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()


def test_overrides_parse_values_as_yaml() -> None:
    document = apply_overrides(
        {"model": {"hidden": [8]}},
        [
            "optimizer.lr=1e-3",
            "model.hidden=[256,128]",
            "data.subset.train=200",
            "data.source=null",
        ],
    )
    assert document == {
        "model": {"hidden": [256, 128]},
        "optimizer": {"lr": 0.001},
        "data": {"subset": {"train": 200}, "source": None},
    }


def test_overrides_do_not_change_the_original() -> None:
    original = {"model": {"hidden": [8]}}
    apply_overrides(original, ["model.hidden=[1]"])
    assert original == {"model": {"hidden": [8]}}


def test_later_override_wins(tmp_path: Path) -> None:
    config = load_config(None, ["seed=1", "seed=2"], {"name": "flag-name"})
    assert (config.seed, config.name) == (2, "flag-name")


@pytest.mark.parametrize("text", ["optimizer.lr", "=3", "a..b=1"])
def test_malformed_override(text: str) -> None:
    with pytest.raises(UsageError, match="--set"):
        parse_override(text)


def test_override_into_a_value_is_refused() -> None:
    with pytest.raises(UsageError, match="seed is a value, not a section"):
        apply_overrides({}, ["seed=1", "seed.x=2"])


def test_exponent_without_dot_is_a_number(tmp_path: Path) -> None:
    # PyYAML alone reads `1e-3` as a string; users mean a number.
    assert load_config(write(tmp_path, "optimizer: {lr: 1e-3}")).optimizer.lr == 0.001


def test_unknown_key_suggests_the_right_one() -> None:
    assert "unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?)" in error_of(
        {"optimizer": {"lrr": 0.1}}
    )


def test_key_in_the_wrong_section_suggests_its_place() -> None:
    assert "(did you mean 'optimizer.lr'?)" in error_of({"lr": 0.1})


def test_wrong_type() -> None:
    message = error_of({"training": {"epochs": "ten"}})
    assert "training.epochs" in message and "'ten'" in message


def test_section_given_a_value() -> None:
    assert "data is a section of keys" in error_of({"data": "mnist"})


@pytest.mark.parametrize(
    ("document", "key"),
    [
        ({"optimizer": {"lr": 0}}, "optimizer.lr"),
        ({"optimizer": {"lr": -0.1}}, "optimizer.lr"),
        ({"model": {"dropout": 1.0}}, "model.dropout"),
        ({"model": {"dropout": -0.1}}, "model.dropout"),
        ({"data": {"val_fraction": 1.0}}, "data.val_fraction"),
        ({"data": {"val_fraction": -0.5}}, "data.val_fraction"),
        ({"training": {"batch_size": 0}}, "training.batch_size"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"model": {"hidden": [64, 0]}}, "model"),
        ({"data": {"subset": {"train": 0}}}, "data.subset.train"),
    ],
)
def test_out_of_range_values(document: dict, key: str) -> None:
    assert f"- {key}" in error_of(document)


@pytest.mark.parametrize(
    ("document", "allowed"),
    [
        ({"data": {"dataset": "cifar10"}}, "mnist, fashion_mnist"),
        ({"optimizer": {"name": "adamm"}}, "sgd, adam, adamw, rmsprop (did you mean 'adam'?)"),
        ({"model": {"activation": "swish"}}, ", ".join(ACTIVATIONS)),
        ({"training": {"amp": "fp16"}}, "none, bf16"),
    ],
)
def test_unknown_names_list_the_allowed_ones(document: dict, allowed: str) -> None:
    assert f"is not one of: {allowed}" in error_of(document)


def test_bad_device_and_name() -> None:
    message = error_of({"device": "gpu", "name": "my run"})
    assert "use auto, cpu, cuda or cuda:N" in message
    assert "'my run'" in message


def test_momentum_for_an_optimizer_without_it() -> None:
    assert "momentum is used by sgd and rmsprop only" in error_of(
        {"optimizer": {"name": "adam", "momentum": 0.9}}
    )


def test_every_problem_is_reported_at_once() -> None:
    message = error_of({"optimizer": {"lr": -1, "name": "x"}, "seed": -1})
    assert message.count("\n  - ") == 3


def test_missing_file() -> None:
    with pytest.raises(UsageError, match="config file not found: nowhere.yaml"):
        load_config("nowhere.yaml")


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a folder"):
        load_config(tmp_path)


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmodel:\n  hidden: [1, 2\n  dropout: 0.1\n")
    with pytest.raises(UsageError, match=r"malformed YAML at line \d+, column \d+"):
        load_config(path)


def test_duplicate_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\nseed: 2\n")
    with pytest.raises(UsageError, match="line 2.*duplicate key 'seed'"):
        load_config(path)


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"))


def test_resolved_yaml_round_trips() -> None:
    config = load_config(None, ["model.hidden=[3]", "data.subset={train: 10}"])
    assert validate(yaml.safe_load(config_to_yaml(config))) == config


def test_all_keys_lists_nested_keys() -> None:
    keys = all_keys(Config)
    assert {"data.subset.train", "optimizer.lr", "training.epochs"} <= set(keys)


def test_cli_config_error_is_short_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, "optimizer:\n  lrr: 0.1\n")
    result = run_cli("train", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'optimizer.lr'" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_print_config_trains_nothing(tmp_path: Path) -> None:
    path = write(tmp_path, "data: {dataset: mnist}\n")
    result = run_cli(
        "train", "--config", str(path), "--set", "model.hidden=[7]", "--print-config", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["model"]["hidden"] == [7]
    assert printed["data"]["dataset"] == "mnist"
    assert printed["optimizer"] == Config().optimizer.model_dump()
    assert not (tmp_path / "runs").exists()


def test_config_errors_come_before_torch_is_imported(tmp_path: Path) -> None:
    # Validation must not wait for torch: a bad config is reported within a second.
    code = (
        "import sys; from mlptrain.cli.train import main; "
        "status = main(['--set', 'optimizer.lr=-1']); "
        "sys.exit(10 + status if 'torch' in sys.modules else status)"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr


# --- messages and round trips that mutation testing found unchecked ----------------------


def test_malformed_yaml_gives_the_exact_place_and_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmodel:\n  hidden: [1, 2\n  dropout: 0.1\n")
    with pytest.raises(UsageError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: malformed YAML at line 4, column 10: expected ',' or ']', but got ':'"
    )


def test_a_malformed_override_is_named_with_its_flag() -> None:
    with pytest.raises(UsageError) as caught:
        load_config(None, ["model.hidden=[1"])
    assert str(caught.value).startswith("--set 'model.hidden=[1': malformed YAML at line 1")


def test_a_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(UsageError, match=rf"cannot read config file {path}: 'utf-8' codec"):
        load_config(path)


def test_an_override_into_a_value_names_the_flag_and_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "seed: 1\n")
    with pytest.raises(UsageError) as caught:
        load_config(path, ["seed.x.y=1"])
    assert str(caught.value) == "--set 'seed.x.y=1': seed is a value, not a section"
    with pytest.raises(UsageError) as caught:
        load_config(path, settings={"seed.x": 1})
    assert str(caught.value) == "command line: seed is a value, not a section"
    with pytest.raises(UsageError) as caught:
        load_config(write(tmp_path, "data:\n  root: x\n"), ["data.root.x=1"])
    assert str(caught.value) == "--set 'data.root.x=1': data.root is a value, not a section"


@pytest.mark.parametrize(
    ("overrides", "settings", "origin"),
    [
        ([], None, "invalid config {path}:"),
        (["seed=-1"], None, "invalid config {path} with command-line overrides:"),
        ([], {"seed": -1}, "invalid config {path} with command-line overrides:"),
    ],
)
def test_validation_errors_name_where_the_config_came_from(tmp_path, overrides, settings, origin):
    path = write(tmp_path, "seed: -2\n" if not (overrides or settings) else "seed: 1\n")
    with pytest.raises(UsageError) as caught:
        load_config(path, overrides, settings)
    assert str(caught.value).splitlines()[0] == origin.format(path=path)


def test_errors_without_a_file_name_the_defaults() -> None:
    with pytest.raises(UsageError) as caught:
        load_config(None, ["seed=-1"])
    assert str(caught.value).splitlines()[0] == "invalid config with command-line overrides:"
    with pytest.raises(UsageError) as caught:
        validate({"seed": -1})
    assert str(caught.value).splitlines()[0] == "invalid config:"


def test_a_top_level_that_is_not_a_mapping_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"must be a mapping of keys .*, not a list$"):
        load_config(write(tmp_path, "- 1\n- 2\n"))


def test_an_override_value_may_hold_an_equals_sign() -> None:
    assert parse_override("data.source=/data/a=b") == (["data", "source"], "/data/a=b")


def test_the_resolved_config_is_plain_json_data_in_schema_order() -> None:
    config = validate({"optimizer": {"betas": [0.8, 0.9]}, "name": "x"})
    assert config_to_dict(config)["optimizer"]["betas"] == [0.8, 0.9]  # a list, not a tuple
    text = config_to_yaml(config)
    assert text.splitlines()[0] == "name: x"  # schema order, not sorted
    assert "  hidden: [256, 128]" in text.splitlines()  # short lists stay on one line


def test_flatten_gives_every_leaf_its_dotted_key():
    """The one flatten (compare's rows, the trackers' parameters, the stack's check)."""
    document = {"a": 1, "b": {"c": [1, 2], "d": {"e": None}}, "f": {}}
    assert flatten(document) == {"a": 1, "b.c": [1, 2], "b.d.e": None}
    assert flatten({"x": {"y": 2}}, prefix="p.") == {"p.x.y": 2}
    flat = flatten(config_to_dict(Config()))
    assert flat["optimizer.lr"] == 0.001 and flat["model.hidden"] == [256, 128]
    assert flat["data.subset"] is None and "data" not in flat  # an unset section is a leaf
