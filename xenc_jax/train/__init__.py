"""Training: data (`data`, `rows`, `silver`), losses (`losses`), optimizer (`optim`), the jitted
train and eval steps (`step`, on the one batch contract of model_fns.py), checkpoints
(`checkpoint`), evaluators and metrics (`evaluators`, `evaluation`), the bi-encoder head
(`bi_head`) and the loop (`loop.train`, in stages: data, state, loop, finalize).

Losses and steps are pure functions of arrays, so they live inside `jax.jit` with fixed shapes.
"""
