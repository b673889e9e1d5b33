"""Many models of one shape trained together as [K, ...] tensors and batched products,
each member with its own state and hooks. Knows no run folder, config file or CLI."""
