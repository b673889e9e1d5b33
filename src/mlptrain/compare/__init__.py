"""Runs read back from their folders and compared: rows, groups, tables and plots.
No torch; knows no training, only what run folders hold."""
