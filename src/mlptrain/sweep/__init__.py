"""Hyperparameter studies: grids and Optuna searches over mlp-train runs."""
