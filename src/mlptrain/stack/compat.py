"""Which runs can be trained together, and which cannot (no torch imported here).

Runs can share one stacked training when everything that fixes tensor shapes and the
data pipeline is equal; per-model values may differ only in PER_MODEL_KEYS.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from mlptrain.config.files import config_to_dict, flatten
from mlptrain.config.schema import Config
from mlptrain.errors import UsageError

# Each model keeps its own value of these; every other key must be equal in a group.
PER_MODEL_KEYS = (
    "name",
    "seed",
    "optimizer.lr",
    "optimizer.weight_decay",
    "optimizer.momentum",
    "optimizer.betas",
    "scheduler.max_lr",
    "model.dropout",
    "training.label_smoothing",
    "training.grad_clip",
)


def shared_part(config: Config) -> dict[str, Any]:
    """The config's keys that must be equal across a group."""
    flat = flatten(config_to_dict(config))
    return {key: value for key, value in flat.items() if key not in PER_MODEL_KEYS}


def group_key(config: Config) -> str:
    """Equal for exactly the configs that can be trained together."""
    return json.dumps(shared_part(config), sort_keys=True, default=str)


def check_stackable(configs: Sequence[Config]) -> None:
    """Refuse a group whose configs differ in a key outside PER_MODEL_KEYS, naming it."""
    if not configs:
        raise UsageError("a group of models to train together needs at least one config")
    first = shared_part(configs[0])
    if configs[0].training.compile:
        raise UsageError(
            "training.compile cannot be used with models trained together (--seeds, "
            "mlp-sweep --stack); set training.compile: false"
        )
    for number, config in enumerate(configs[1:], 2):
        other = shared_part(config)
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                raise UsageError(
                    f"models trained together must agree on {key}, but model 1 has "
                    f"{first.get(key)!r} and model {number} has {other.get(key)!r} (only "
                    f"{', '.join(PER_MODEL_KEYS[1:])} may differ)"
                )
