"""`--config` by shipped name or path, layered configs, --list-configs and --version."""

from __future__ import annotations

import pytest
import yaml

from mlptrain.config import presets as shipped
from mlptrain.config.files import load_config
from mlptrain.errors import UsageError

from .conftest import REPO, run_cli

PRESETS = ("mnist", "fashion", "mnist-fast", "fashion-fast", "smoke")


def test_the_presets_and_recipes_are_shipped_from_the_one_configs_folder():
    configs = shipped.shipped_configs()
    assert set(PRESETS) <= set(configs)
    recipes = {path.stem for path in (REPO / "configs" / "recipes").glob("*.yaml")}
    assert {f"recipes/{stem}" for stem in recipes} <= set(configs)
    assert configs["fashion"] == REPO / "configs" / "fashion.yaml"  # a checkout reads configs/


@pytest.mark.parametrize(
    "given", ["fashion", "fashion.yaml", "configs/fashion.yaml", "./configs/fashion.yaml"]
)
def test_a_shipped_name_is_found_from_any_folder(given, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the clone: no configs/ here
    assert shipped.locate(given) == REPO / "configs" / "fashion.yaml"
    assert load_config(given).name == "fashion-mlp"


def test_a_recipe_is_found_by_its_name():
    assert load_config("recipes/mnist-adam-128-64").name == "recipe-mnist-adam-128-64"


def test_a_path_that_exists_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fashion").write_text("name: mine\n")  # a file named like a preset
    assert load_config("fashion").name == "mine"


def test_an_unknown_name_lists_the_shipped_names_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as caught:
        load_config("fashon")
    message = str(caught.value)
    assert "config file not found: fashon, and it is not a shipped config name" in message
    assert "did you mean 'fashion'?" in message
    assert "recipes/mnist-sgd-30" in message and "--list-configs" in message


def test_the_first_comment_line_describes_a_config(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("# One line.\n# More.\nname: x\n")
    assert shipped.description(path) == "One line."
    path.write_text("name: x\n# later comment\n")
    assert shipped.description(path) == ""


def _layer(tmp_path, name: str, document: dict):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(document))
    return path


def test_later_files_override_earlier_ones_key_by_key(tmp_path):
    base = _layer(
        tmp_path,
        "base.yaml",
        {"name": "base", "model": {"hidden": [64, 32], "dropout": 0.1}, "optimizer": {"lr": 0.1}},
    )
    local = _layer(
        tmp_path, "local.yaml", {"model": {"hidden": [16]}, "data": {"root": "/elsewhere"}}
    )
    config = load_config([base, local], overrides=["optimizer.lr=0.01"])
    assert config.name == "base"  # kept from the first file
    assert config.model.hidden == [16]  # lists replace, not append
    assert config.model.dropout == 0.1  # the rest of the section merges
    assert config.data.root == "/elsewhere"
    assert config.optimizer.lr == 0.01  # --set applies after every file


def test_a_layer_over_a_shipped_preset(tmp_path):
    local = _layer(tmp_path, "local.yaml", {"training": {"epochs": 1}})
    config = load_config(["fashion", local])
    preset = load_config("fashion")
    assert config.training.epochs == 1
    assert config.model == preset.model and config.optimizer == preset.optimizer


def test_an_error_names_the_file_its_key_came_from(tmp_path):
    base = _layer(tmp_path, "base.yaml", {"optimizer": {"lr": 0.1}, "model": {"hidden": [8]}})
    local = _layer(tmp_path, "local.yaml", {"optimizer": {"lrr": 0.1}})
    with pytest.raises(UsageError) as caught:
        load_config([base, local], overrides=["model.dropout=2"])
    message = str(caught.value)
    assert f"unknown key 'optimizer.lrr' (did you mean 'optimizer.lr'?) (from {local})" in message
    assert "model.dropout" in message and "(from --set 'model.dropout=2')" in message


def test_a_section_replaced_by_a_later_file_is_that_files(tmp_path):
    base = _layer(tmp_path, "base.yaml", {"model": {"hidden": [8]}})
    local = _layer(tmp_path, "local.yaml", {"model": 3})
    with pytest.raises(UsageError, match=rf"model is a section.*\(from {local}\)"):
        load_config([base, local])


def test_layered_configs_on_the_command_line(tmp_path):
    local = _layer(tmp_path, "local.yaml", {"model": {"hidden": [16]}, "seed": 7})
    result = run_cli(
        "train",
        "--config",
        "smoke",
        "--config",
        str(local),
        "--set",
        "seed=9",
        "--print-config",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert printed["name"] == "smoke" and printed["model"]["hidden"] == [16]
    assert printed["seed"] == 9


def test_list_configs_prints_each_name_with_its_description(tmp_path):
    result = run_cli("train", "--list-configs", cwd=tmp_path)
    assert result.returncode == 0
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert set(lines) == set(shipped.shipped_configs())
    assert lines["smoke"].startswith("A seconds-long run on a small subset")


def test_an_unknown_config_name_is_exit_2(tmp_path):
    result = run_cli("train", "--config", "mnits", cwd=tmp_path)
    assert result.returncode == 2
    assert "did you mean 'mnist'?" in result.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "sweep", "predict"])
def test_every_command_prints_its_version(command, tmp_path):
    import torch

    import mlptrain

    result = run_cli(command, "--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"mlptrain {mlptrain.__version__} (torch {torch.__version__}")
    assert "device cpu" in result.stdout  # this machine has no GPU; auto means the CPU


# --- small contracts of layering that mutation testing showed unguarded --------------


def test_a_missing_config_file_is_named():
    from mlptrain.config.files import read_config_file

    with pytest.raises(UsageError, match="config file not found: .*missing.yaml"):
        read_config_file("missing.yaml")


def test_an_override_through_a_value_names_the_set_flag():
    from mlptrain.config.files import apply_overrides

    with pytest.raises(UsageError, match=r"--set 'seed.x=1': seed is a value, not a section"):
        apply_overrides({"seed": 1}, ["seed.x=1"])


def test_errors_name_their_source_only_when_there_are_several(tmp_path):
    one = tmp_path / "one.yaml"
    one.write_text("optimizer: {lrr: 0.1}\n")
    with pytest.raises(UsageError) as alone:
        load_config(one)
    assert "(from" not in str(alone.value)  # one source: nothing to tell apart
    two = tmp_path / "two.yaml"
    two.write_text("seed: 1\n")
    with pytest.raises(UsageError) as layered:
        load_config([one, two])
    assert f"config {one} + {two}" in str(layered.value)
    assert f"(from {one})" in str(layered.value)
    with pytest.raises(UsageError) as with_settings:
        load_config(one, settings={"seed": 2, "device": "cpu"})
    assert f"(from {one})" in str(with_settings.value)


def test_merged_layers_share_no_lists_with_the_files():
    from mlptrain.config.files import merge_layers

    first = {"model": {"hidden": [8, 4]}}
    merged, _ = merge_layers([("a.yaml", first), ("b.yaml", {"seed": 1})])
    merged["model"]["hidden"].append(2)
    assert first["model"]["hidden"] == [8, 4]
