"""An mlptrain checkpoint as an MLflow pyfunc model, logged "from code": MLflow copies
this file into the model and runs it to load the model (`mlflow models serve`,
`mlflow.pyfunc.load_model`), so it must stand alone and end with set_model.

Input: pixel arrays N x H x W (or N x H*W) of whole numbers 0-255, as JSON gives them
(int64), e.g. {"inputs": [[[0, 0, ...], ...]]}. Output: per image its class, the class's
index and every class's probability, one column per class, in the model's class order.
"""

from __future__ import annotations

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

CHECKPOINT = "checkpoint"  # the artifact's name: the run's best.pt


class CheckpointModel(PythonModel):
    def load_context(self, context) -> None:
        import torch

        from mlptrain.artifacts.checkpoint import load_checkpoint, model_from_checkpoint

        checkpoint = load_checkpoint(context.artifacts[CHECKPOINT])
        self.model = model_from_checkpoint(checkpoint).eval()
        self.class_names = list(checkpoint["class_names"])
        self.torch = torch

    def predict(self, context, model_input, params=None):
        import pandas as pd

        height, width = self.model.spec.image_size
        values = np.asarray(model_input.values if hasattr(model_input, "values") else model_input)
        if values.ndim == 2 and values.shape[1] == height * width:
            values = values.reshape(-1, height, width)
        if values.ndim != 3 or values.shape[1:] != (height, width):
            raise ValueError(
                f"pixels of shape {list(values.shape)}; the model takes N x {height} x {width}"
            )
        if values.size and (values.min() < 0 or values.max() > 255):
            raise ValueError("pixels must be whole numbers 0-255")
        pixels = self.torch.from_numpy(values.astype(np.uint8))
        with self.torch.inference_mode():
            probabilities = self.model(pixels).float().softmax(dim=1).numpy()
        top = probabilities.argmax(axis=1)
        frame = pd.DataFrame(probabilities.astype(np.float64), columns=self.class_names)
        frame.insert(0, "index", top.astype(np.int64))
        frame.insert(0, "class", [self.class_names[i] for i in top])
        return frame


mlflow.models.set_model(CheckpointModel())
