"""mlptrain: train fully-connected classifiers on MNIST and Fashion-MNIST from one YAML file.

import mlptrain
result = mlptrain.train("configs/fashion.yaml", overrides=["training.epochs=5"])
mlptrain.evaluate(result.run_dir / "best.pt").accuracy
"""

__version__ = "0.1.0"

from mlptrain.api import evaluate, evaluate_ensemble, train, train_together

__all__ = ["__version__", "evaluate", "evaluate_ensemble", "train", "train_together"]
