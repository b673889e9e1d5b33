"""Datasets as uint8 tensors: built-in IDX files (with checksums), users' images and CSV,
their cache, splits and batches. Knows the config's data section; no model, no training."""
