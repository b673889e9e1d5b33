"""The training loop (fit, epochs, evaluation of a split), optimizers and schedules,
augmentation, device and precision (runtime, arithmetic). Knows no run folder or CLI."""
