"""The config: its schema (every key, default and limit), readable errors, YAML files
and --set layering, the shipped presets, and the monitor. No torch; knows no run or data."""
