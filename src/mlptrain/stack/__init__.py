"""Many models of one shape trained together: weights stacked into [K, ...] tensors and
batched matrix products, so that K small problems become one large one."""
