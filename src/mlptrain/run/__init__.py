"""Runs as library objects: one lifecycle for a run or a group (start, fit, test, record,
stop), and the trial entry point sweeps start. Knows no CLI and no sweep."""
