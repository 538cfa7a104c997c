"""Sharded training (data parallel, FSDP and FSDP + tensor parallel over 8 forced CPU devices) equals one-device training.

XLA_FLAGS must be set before jax is imported, so the comparison runs in a fresh interpreter:
the test re-runs this file as a script with 8 host devices (pattern of test_search_sharded.py).
"""
from __future__ import annotations

import sys
from pathlib import Path
from forced_devices import run_on_devices

REPO = Path(__file__).resolve().parents[1]
STEPS = 4
# SGD steps of 0.05 move the tiny model's params by up to ~0.05; the sharded and one-device params then
# differ by lr times the gradients' reduction-order differences (measured: 1.2e-7, one ulp at 1,
# on AMD EPYC), far inside 1e-5, and a real error (a dropped shard, a wrong psum) is far outside.
SGD_LR = 0.05


def test_sharded_training_equals_single_device(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent))
    from test_train_utils import make_tiny_model, write_pairs
    model = make_tiny_model(tmp_path / "model")  # dropout on: the RNG must not depend on sharding
    data = write_pairs(tmp_path / "pairs.tsv", n=40)
    run_on_devices([__file__, str(model), str(data)], devices=8)


def _train(pt, stream, plan, steps, sgd_lr=None):
    """AdamW as configured for training, or plain SGD (`sgd_lr`) for comparing params: after AdamW,
    params are ill-conditioned in the gradient (an entry with a near-zero gradient moves by up to
    ~lr on a last-bit change of it; see GRAD_RTOL in test_train_utils), after SGD they are not."""
    import jax
    import optax
    from xenc_jax.train import optim as O
    from xenc_jax.train import step as S
    ocfg = O.OptimConfig(learning_rate=5e-4, warmup_steps=1)
    tx = O.make_optimizer(ocfg, steps) if sgd_lr is None else optax.sgd(sgd_lr)
    sh = S.state_shardings(plan, tx, pt.params, S.param_shardings(plan, pt.module()))
    state = S.create_state(plan, tx, pt.params, sh)
    fn = S.make_train_step(S.cross_encoder_apply(pt.module()), S.cross_encoder_loss("bce"), tx, plan, sh)
    stream.start_at({"epoch": 0, "index": 0})
    rng = jax.random.key(7)
    losses = []
    for _ in range(steps):
        state, m = fn(state, plan.place_batch(next(stream).arrays()), rng)
        losses.append(float(m["loss"]))
    return jax.device_get(state.params), losses, state


def _main(model: str, data: str) -> int:
    import jax
    import numpy as np

    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.train import data as D
    from xenc_jax.train import step as S

    devices = jax.devices()
    assert len(devices) == 8, devices
    pt = load_pretrained(model, head=True)
    groups = D.make_groups(D.read_examples(D.DataSource(path=data)), pt.tokenizer, 64)
    # One bucket length (every pair of write_pairs is <= 29 tokens): each distinct batch shape is
    # one more XLA compile of every train step built here (6 of them), and the argument,
    # sharded = one device on the same batches, does not depend on how many shapes there are.
    stream = D.BatchStream(groups, D.StreamConfig(batch_size=8, bucket_lengths=(32,), max_length=64, seed=3))
    from xenc_jax.sharding import make_mesh
    one = S.make_plan("dp", make_mesh(devices=devices[:1]))
    # Losses and params are compared on the SGD runs (losses are computed before each update, so
    # they check the sharded forward as well as AdamW's would). AdamW runs only where its state
    # is what is checked: fsdp must shard the optimizer moments like the params (one step does).
    want, want_losses, _ = _train(pt, stream, one, STEPS, sgd_lr=SGD_LR)
    failures = []
    for strategy, mesh in (("dp", make_mesh(data=8)), ("fsdp", make_mesh(data=8)),
                           ("fsdp_tp", make_mesh(data=4, model=2))):
        plan = S.make_plan(strategy, mesh)
        got, losses, _ = _train(pt, stream, plan, STEPS, sgd_lr=SGD_LR)
        if strategy.startswith("fsdp"):
            _, _, state = _train(pt, stream, plan, 1)
            specs = {str(x.sharding.spec) for x in jax.tree.leaves(state.params)}
            if not any("data" in s for s in specs):
                failures.append(f"fsdp: no parameter is sharded ({specs})")
            mu = jax.tree.leaves(state.opt_state)
            if not any("data" in str(x.sharding.spec) for x in mu if hasattr(x, "sharding") and x.ndim):
                failures.append("fsdp: optimizer moments are not sharded like their params")
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)))
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(pt.params)))
        print(f"{strategy}: max |param diff| vs 1 device after SGD = {diff:.3g} (params moved {moved:.3g}); "
              f"losses {np.round(losses, 6).tolist()} vs {np.round(want_losses, 6).tolist()}")
        if not diff <= 1e-5 or not moved > 1e-4:
            failures.append(f"{strategy}: diff {diff} moved {moved}")
        if not np.allclose(losses, want_losses, atol=1e-5):
            failures.append(f"{strategy}: losses differ")
    for f in failures:
        print("MISMATCH", f)
    if failures:
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(_main(sys.argv[1], sys.argv[2]))
