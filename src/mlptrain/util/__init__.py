"""Atomic file writes, logging and the two-stage stop on signals: plain helpers.
Imports nothing of mlptrain but errors; knows no config, torch model or run."""
