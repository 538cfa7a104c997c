"""Multi-process scoring: real local processes joined by jax.distributed (CPU, gloo collectives).

Each worker is this file run as a script with its own XLA_FLAGS (2 CPU devices per process), a
free localhost port, jax.distributed.initialize with a short initialization_timeout, and
subprocess timeouts, so a broken setup fails the test instead of hanging CI.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from forced_devices import device_env

REPO = Path(__file__).resolve().parents[1]
DEVICES_PER_PROCESS = 2
N_PAIRS = 37  # not a multiple of the process count, the device count or any batch size
MAX_LENGTH = 64
BATCH_SIZE = 4  # rows per batch per process (a multiple of the local data-parallel size)
LENGTHS = (16, 32)


def make_pairs(n: int = N_PAIRS) -> list[tuple[str, str]]:
    """Deterministic pairs of varied lengths; pair 0 is the only one in the longest bucket, so
    process 0 has a batch shape that process 1 has not (its schedule gets an empty batch)."""
    rng = np.random.default_rng(0)
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex jovial "
             "kings near the old river bank").split()
    pairs = [(" ".join(rng.choice(words, rng.integers(1, 5))),
              " ".join(rng.choice(words, rng.integers(1, 20)))) for _ in range(n)]
    pairs[0] = ("a long query " * 3, "a long passage about foxes and dogs " * 6)
    return pairs


# ----------------------------------------------------------------------------- helpers

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def worker_env(devices: int) -> dict:
    env = device_env(devices)
    for k in ("XENC_COORDINATOR", "XENC_NUM_PROCESSES", "XENC_PROCESS_ID"):
        env.pop(k, None)
    return env


def run_processes(argvs: list[list[str]], timeout: float, devices: int = DEVICES_PER_PROCESS,
                  envs: list[dict] | None = None):
    """Start all, wait for all (killing every process group on timeout); -> [(rc, out, err)]."""
    envs = envs or [{}] * len(argvs)
    procs = [subprocess.Popen(argv, env={**worker_env(devices), **extra}, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
             for argv, extra in zip(argvs, envs)]
    deadline, results = time.monotonic() + timeout, []
    try:
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((p.returncode, out, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        outs = [p.communicate() for p in procs]
        pytest.fail(f"processes still running after {timeout}s: " +
                    "\n".join(f"--- {i}:\n{o}\n{e[-3000:]}" for i, (o, e) in enumerate(outs)))
    return results


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, minilm_dir):
    """Tiny random BERT with the real WordPiece tokenizer (fast to compile)."""
    import transformers as tf
    from tiny_hf import make_tiny
    tok = tf.AutoTokenizer.from_pretrained(str(minilm_dir))
    path = tmp_path_factory.mktemp("bert_mh")
    make_tiny("bert", path, num_labels=1, seed=21, vocab_size=tok.vocab_size, type_vocab_size=2,
              max_position_embeddings=512, intermediate_size=64)
    tok.save_pretrained(str(path))
    return path


def _reference(model_dir):
    from xenc_jax.batching import BucketConfig
    from xenc_jax.cross_encoder import CrossEncoder
    ce = CrossEncoder(model_dir, max_length=MAX_LENGTH,
                      buckets=BucketConfig(lengths=LENGTHS, batch_size=BATCH_SIZE))
    return ce.predict(make_pairs()), ce.compile_count


# ----------------------------------------------------------------------------- tests

@pytest.mark.parametrize("num_processes", [2])
def test_two_processes_match_single_process(tiny_model, tmp_path, num_processes):
    port = free_port()
    argvs = [[sys.executable, __file__, "score", str(tiny_model), f"localhost:{port}",
              str(num_processes), str(pid), str(tmp_path)] for pid in range(num_processes)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(a, env=worker_env(DEVICES_PER_PROCESS), cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True) for a in argvs]
    try:
        want, want_compiles = _reference(tiny_model)  # overlaps with the workers' start-up
        results = []
        for p in procs:
            out, err = p.communicate(timeout=max(1.0, 300 - (time.monotonic() - t0)))
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.communicate()
    for pid, (rc, out, err) in enumerate(results):
        assert rc == 0, f"process {pid} failed (rc {rc}):\n{out}\n{err[-4000:]}"
    reports = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
    assert want.shape == (N_PAIRS,)
    for name in ("dp", "tp"):
        gathered = np.load(tmp_path / f"{name}.gathered.npy")
        np.testing.assert_allclose(gathered, want, rtol=0, atol=1e-5, err_msg=f"gathered {name}")
        for pid, rep in enumerate(reports):
            # each process got its strided slice, and compiled each bucket shape exactly once,
            # even process 1, which had no pair in the longest bucket
            assert rep[name]["n_local"] == len(range(pid, N_PAIRS, num_processes))
            assert rep[name]["compile_count"] == want_compiles == 3, rep
            assert rep[name]["mesh"] == ({"data": 4, "model": 1} if name == "dp" else {"data": 2, "model": 2})
    for rep in reports:
        assert "must be a multiple of the process count" in rep["model_across_processes"], rep
        assert rep["search_equal"] is True, rep


CLI = [sys.executable, "-c", "import sys; from xenc_jax.cli import main; sys.exit(main(sys.argv[1:]))"]


def test_cli_two_processes_score_gathered_and_encode_parts(tiny_model, tmp_path, minilm_dir):
    """`xenc score` writes one output, assembled by process 0 from both processes' parts (flags);
    `xenc encode --output-parts` keeps each process's parts (env variables), and `xenc merge-parts`
    assembles them in input order. (The scheme itself: test_parts_of_several_processes_merge.)"""
    import transformers as tf
    from tiny_hf import make_tiny

    from xenc_jax.bi_encoder import BiEncoder
    from xenc_jax.cli import main
    from xenc_jax.cross_encoder import CrossEncoder
    pairs = make_pairs()
    (tmp_path / "pairs.tsv").write_text("".join(f"{a}\t{b}\n" for a, b in pairs))
    texts = [b for _, b in pairs]
    (tmp_path / "texts.txt").write_text("".join(t + "\n" for t in texts))
    enc_dir = tmp_path / "enc"
    make_tiny("bert", enc_dir, head=False, seed=3, vocab_size=30522, type_vocab_size=2,
              max_position_embeddings=512, intermediate_size=64)
    tf.AutoTokenizer.from_pretrained(str(minilm_dir)).save_pretrained(str(enc_dir))

    port = free_port()
    score = [[*CLI, "score", str(tmp_path / "pairs.tsv"), "--model", str(tiny_model), "--max-length", "64",
              "--batch-size", "4", "--mesh", "data=-1,model=2", "--sharding", "tp", "--coordinator",
              f"localhost:{port}", "--num-processes", "2", "--process-id", str(pid), "--init-timeout", "60",
              "-o", str(tmp_path / "scores.jsonl")] for pid in range(2)]
    results = run_processes(score, timeout=300)
    for pid, (rc, out, err) in enumerate(results):
        assert rc == 0, f"score process {pid} failed:\n{out}\n{err[-4000:]}"
    want = CrossEncoder(tiny_model, max_length=64).predict(pairs)
    rows = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == list(range(N_PAIRS))
    np.testing.assert_allclose([r["score"] for r in rows], want, rtol=0, atol=1e-5)

    port = free_port()
    encode = [[*CLI, "encode", str(tmp_path / "texts.txt"), "--model", str(enc_dir), "--max-seq-length", "64",
               "--batch-size", "4", "--output-parts", "-o", str(tmp_path / "emb.npy")] for _ in range(2)]
    envs = [{"XENC_COORDINATOR": f"localhost:{port}", "XENC_NUM_PROCESSES": "2", "XENC_PROCESS_ID": str(pid)}
            for pid in range(2)]
    results = run_processes(encode, timeout=300, envs=envs)
    for pid, (rc, out, err) in enumerate(results):
        assert rc == 0, f"encode process {pid} failed:\n{out}\n{err[-4000:]}"
    kept = sorted(p.name for p in (tmp_path / "emb.npy.parts").iterdir())
    # one chunk (37 texts < --chunk-size) per process: its part, and its done marker
    assert kept == ["done-p00000.json", "done-p00001.json", "manifest.json", "part-p00000-000000.npy",
                    "part-p00001-000000.npy"], kept
    assert not (tmp_path / "emb.npy").exists()
    assert main(["merge-parts", str(tmp_path / "emb.npy")]) == 0
    assert not (tmp_path / "emb.npy.parts").exists()
    want = BiEncoder(enc_dir, max_seq_length=64).encode(texts)
    np.testing.assert_allclose(np.load(tmp_path / "emb.npy"), want, rtol=0, atol=1e-5)


def test_missing_process_fails_fast_instead_of_hanging(tmp_path):
    """num_processes=2 but only process 0 starts: initialize must give up and say why."""
    port = free_port()
    t0 = time.monotonic()
    [(rc, out, err)] = run_processes([[sys.executable, __file__, "lonely", f"localhost:{port}"]],
                                     timeout=120, devices=1)
    assert rc != 0, out
    # XLA's coordination client aborts the process (no Python exception is possible); our
    # notice before it says what was awaited, XLA's line says why it stopped.
    assert "process 0 of 2 joining coordinator" in err and "within 5s" in err, err[-3000:]
    assert "DEADLINE_EXCEEDED" in err, err[-3000:]
    assert time.monotonic() - t0 < 120


def test_bad_process_arguments_are_clear_errors(monkeypatch):
    from xenc_jax import multihost
    with pytest.raises(ValueError, match="process_id 2 is out of range for num_processes=2"):
        multihost.initialize("localhost:1234", 2, 2)
    with pytest.raises(ValueError, match="process_id -1 is out of range"):
        multihost.initialize("localhost:1234", 2, -1)
    with pytest.raises(ValueError, match="num_processes must be >= 1"):
        multihost.initialize("localhost:1234", 0, 0)
    with pytest.raises(ValueError, match="host:port"):
        multihost.initialize("localhost", 2, 0)
    monkeypatch.setenv("XENC_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="XENC_NUM_PROCESSES"):
        multihost.initialize()
    monkeypatch.delenv("XENC_NUM_PROCESSES")
    assert multihost.initialize() is False  # no arguments, no env: a single-process run


def test_slices(tmp_path):
    from xenc_jax import multihost
    n, count = 37, 4
    parts = [multihost.slice_indices(n, k, count) for k in range(count)]
    assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    assert multihost.process_slice(list(range(n)), 1, count) == list(range(1, n, count))
    with pytest.raises(ValueError, match="out of range"):
        multihost.slice_indices(n, 4, 4)


def test_parts_of_several_processes_merge(tmp_path):
    """The CLI's one parts scheme (cli/jobs.py) with three processes writing into one directory, no
    collective needed: process k writes part-p0000k-* for its contiguous share and a done marker;
    `xenc merge-parts` refuses while a process has not finished, then assembles in input order."""
    from xenc_jax.cli import main
    from xenc_jax.cli.jobs import PartsJob
    from xenc_jax.cli.writers import part_format
    n, shares = 37, [(0, 10), (10, 30), (30, 37)]  # uneven, as byte ranges of a file are
    values = np.arange(2 * n, dtype=np.float32).reshape(n, 2) * 1.5
    out, fmt = tmp_path / "emb.npy", part_format("npy")
    identity = {"job": "texts", "settings": {"output_format": "npy"}}
    jobs = [PartsJob(out, identity, fmt.ext, process=k, processes=3) for k in range(3)]
    with pytest.raises(ValueError, match="does not match this process's job"):
        PartsJob(out, {**identity, "job": "pairs"}, fmt.ext, process=1, processes=3)
    for job, (a, b) in zip(jobs, shares):
        for k, lo in enumerate(range(a, b, 4)):  # chunks of 4
            job.write_part(k, lambda f, lo=lo: fmt.write(values[lo:min(lo + 4, b)], lo, f))
    jobs[0].complete(10)
    jobs[2].complete(7)
    assert main(["merge-parts", str(out)]) == 2  # process 1 has written its parts, but not said done
    assert not out.exists()
    with pytest.raises(ValueError, match=r"process 1 \(5 part\(s\) written, share not finished\)"):
        jobs[0].assemble(fmt.assemble)
    jobs[1].complete(20)
    assert main(["merge-parts", str(out), "-o", str(tmp_path / "all.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "all.npy"), values)
    assert not out.with_name("emb.npy.parts").exists()
    assert main(["merge-parts", str(out)]) == 2  # nothing left to merge: a clear error, not a traceback


# ----------------------------------------------------------------------------- workers

def _worker_score(model_dir, coordinator, num_processes, pid, out_dir) -> int:
    from xenc_jax import multihost
    multihost.initialize(coordinator, int(num_processes), int(pid), timeout_s=60)
    import jax

    from xenc_jax.batching import BucketConfig
    from xenc_jax.cross_encoder import CrossEncoder
    from xenc_jax.sharding import make_mesh

    assert jax.process_count() == int(num_processes) and jax.local_device_count() == DEVICES_PER_PROCESS
    pairs = make_pairs()
    local = multihost.process_slice(pairs)
    report = {}
    for name, axes, strategy in (("dp", dict(data=-1), "dp"), ("tp", dict(data=-1, model=2), "tp")):
        ce = CrossEncoder(model_dir, max_length=MAX_LENGTH, mesh=make_mesh(**axes), sharding=strategy,
                          buckets=BucketConfig(lengths=LENGTHS, batch_size=BATCH_SIZE))
        scores = ce.predict(local)
        gathered = multihost.gather_slices(scores, len(pairs))
        if jax.process_index() == 0:
            np.save(Path(out_dir) / f"{name}.gathered.npy", gathered)
        report[name] = {"n_local": len(local), "compile_count": ce.compile_count,
                        "mesh": dict(ce.plan.mesh.shape)}
    # semantic_search's sharded mode over the global mesh (corpus split across both processes)
    from xenc_jax import search
    rng = np.random.default_rng(1)
    q, corpus = rng.normal(size=(5, 8)).astype(np.float32), rng.normal(size=(N_PAIRS, 8)).astype(np.float32)
    kw = dict(top_k=5, corpus_chunk_size=16)
    want, got = search.semantic_search(q, corpus, **kw), search.semantic_search(q, corpus, mesh=make_mesh(), **kw)
    report["search_equal"] = all([h["corpus_id"] for h in a] == [h["corpus_id"] for h in b] and
                                 max(abs(x["score"] - y["score"]) for x, y in zip(a, b)) <= 1e-6
                                 for a, b in zip(got, want))
    try:  # 'model' spanning both processes: each would hold the same rows, refused clearly
        make_mesh(data=1, model=-1)
        report["model_across_processes"] = "accepted"
    except ValueError as e:
        report["model_across_processes"] = str(e)
    print(json.dumps(report))
    return 0


def _worker_lonely(coordinator) -> int:
    from xenc_jax import multihost
    multihost.initialize(coordinator, 2, 0, timeout_s=5)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    mode, *args = sys.argv[1:]
    sys.exit({"score": _worker_score, "lonely": _worker_lonely}[mode](*args))
