"""Command-line entry points; only this package wires the modules together."""
