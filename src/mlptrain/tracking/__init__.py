"""TensorBoard and MLflow as observers of the training loop that also record a run's end;
a tracker that cannot write never costs a run. Knows no CLI, sweep or run lifecycle."""
