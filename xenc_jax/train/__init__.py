"""Training: pure losses (`losses`), metrics (`evaluation`), and later the train step and loop.

Everything here is a pure function of arrays so it can live inside `jax.jit` with fixed shapes.
"""
