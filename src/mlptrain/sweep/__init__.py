"""Hyperparameter studies: grids and Optuna searches, each trial a process of its own
(run.trial); settings, storage and reports. Knows runs only by their folders and specs."""
