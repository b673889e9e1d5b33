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


def stack_refusal(configs: Sequence[Config]) -> str | None:
    """Why these configs cannot be trained together (None when they can): a key outside
    PER_MODEL_KEYS that differs, named, or a feature the stack does not train."""
    if not configs:
        raise ValueError("a group of models to train together needs at least one config")
    first = shared_part(configs[0])
    if configs[0].training.compile:
        return "training.compile is not used with models trained together"
    averaged = [key for key in ("ema", "swa") if getattr(configs[0].training, key) is not None]
    if averaged:
        return f"training.{averaged[0]} (averaged weights) is not trained together yet"
    for number, config in enumerate(configs[1:], 2):
        other = shared_part(config)
        for key in sorted(set(first) | set(other)):
            if first.get(key) != other.get(key):
                return (
                    f"models trained together must agree on {key}, but model 1 has "
                    f"{first.get(key)!r} and model {number} has {other.get(key)!r} (only "
                    f"{', '.join(PER_MODEL_KEYS[1:])} may differ)"
                )
    return None
