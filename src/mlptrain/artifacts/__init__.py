"""What a run leaves on disk: the run folder, checkpoints, metric summaries, pictures
and the report. Knows no training loop, sweep or CLI."""
