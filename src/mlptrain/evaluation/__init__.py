"""A checkpoint, or an ensemble of them, evaluated on a split (clean or perturbed), and
what an evaluation writes. Knows no training run, sweep or CLI."""
