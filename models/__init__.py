"""Reference (and, later, optimized) Hawk, Griffin and MQA models in PyTorch and JAX."""
