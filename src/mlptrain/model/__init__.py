"""The MLP and its parts (dropout masks from cheap random bits); a ModelSpec rebuilds it.
Knows no config, data, training or files."""
