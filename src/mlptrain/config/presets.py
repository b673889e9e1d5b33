"""The configs that ship with mlptrain (the presets and the recipes) and how `--config`
finds a file or a shipped name.

One copy: the repository's `configs/` folder. A wheel carries it as the package data
`mlptrain/configs/` (pyproject.toml maps it there); a source checkout or an editable
install reads `configs/` itself. Imports only the standard library.
"""

from __future__ import annotations

from pathlib import Path

from mlptrain.config.messages import did_you_mean
from mlptrain.errors import UsageError

_INSTALLED = Path(__file__).resolve().parents[1] / "configs"  # inside an installed wheel
_CHECKOUT = Path(__file__).resolve().parents[3] / "configs"  # src/mlptrain/config -> configs/
SUFFIX = ".yaml"


def configs_folder() -> Path | None:
    """Where the shipped configs are: the installed package's copy or the checkout's."""
    for folder in (_INSTALLED, _CHECKOUT):
        if (folder / f"smoke{SUFFIX}").is_file():
            return folder
    return None


def shipped_configs() -> dict[str, Path]:
    """Every shipped name (`fashion`, `recipes/mnist-adam-128-64`) and its file, sorted."""
    folder = configs_folder()
    if folder is None:
        return {}
    files = sorted(folder.rglob(f"*{SUFFIX}"), key=lambda path: (len(path.parts), path))
    return {path.relative_to(folder).with_suffix("").as_posix(): path for path in files}


def description(path: Path) -> str:
    """The first comment line of a config file: its one-line description."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def listing() -> str:
    """`mlp-train --list-configs`: the shipped names with their descriptions."""
    configs = shipped_configs()
    if not configs:
        return "no shipped configs found (this installation of mlptrain lacks its configs)\n"
    width = max(len(name) for name in configs)
    lines = [f"{name:<{width}}  {description(path)}" for name, path in configs.items()]
    return "\n".join(lines) + "\n"


def locate(given: str | Path) -> Path:
    """The config file `--config` means: a path that exists wins; otherwise a shipped name
    (`fashion`, `fashion.yaml`, `recipes/fashion-sgd-64`, or the checkout's spelling
    `configs/fashion.yaml`, so the README's commands work outside a clone too)."""
    path = Path(given).expanduser()
    if path.exists():
        return path
    configs = shipped_configs()
    name = path.as_posix().removesuffix(SUFFIX).removeprefix("./").removeprefix("configs/")
    if name in configs:
        return configs[name]
    names = list(configs)
    shipped = ", ".join(names) if names else "none found"
    raise UsageError(
        f"config file not found: {given}, and it is not a shipped config name"
        f"{did_you_mean(name, names)}; shipped: {shipped} (mlp-train --list-configs)"
    )
