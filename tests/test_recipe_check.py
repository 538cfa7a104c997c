"""scripts/recipe_check.py (docs/recipe_check.md): the parts whose mistakes would silently change the
comparison: the given triplets become the labeled pairs the mined arm's rows look like, the two
arms' training configs differ only in their data and output, and the paired per-query statistics.
No model is run: the check itself takes ~40 minutes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts import recipe_check as rc  # noqa: E402


def test_triplets_become_labeled_pairs_and_a_bad_row_names_its_line(tmp_path):
    f = tmp_path / "t.tsv"
    f.write_text("q1\tp1\tn1\n\nq2\tp2\tn2\n", encoding="utf-8")
    rows = rc.labeled_pairs(rc.read_triplets(f))
    # mine_hard_negatives' labeled-pair layout: per query the positive (1), then its negatives (0)
    assert rows == [{"query": "q1", "passage": "p1", "label": 1}, {"query": "q1", "passage": "n1", "label": 0},
                    {"query": "q2", "passage": "p2", "label": 1}, {"query": "q2", "passage": "n2", "label": 0}]
    f.write_text("q1\tp1\tn1\nq2\tp2 with a\ttab\tn2\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"t\.tsv:2: expected 3 tab-separated columns .* got 4"):
        rc.read_triplets(f)


def test_the_arms_differ_only_in_data_and_output(tmp_path):
    from xenc_jax.train.config import apply_overrides, load_config, to_dict
    base = load_config(rc.CONFIG)

    def resolved(arm):
        cmd = rc.train_command(arm, tmp_path, 65)
        sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "--set"]
        return to_dict(apply_overrides(base, sets).validate())

    a, b = resolved("random"), resolved("mined")
    differ = {k for k in a if a[k] != b[k]}
    assert differ == {"name", "train", "output_dir"}
    assert {k for k in a["train"] if a["train"][k] != b["train"][k]} == {"path"}
    assert a["max_steps"] == b["max_steps"] == 65 and a["seed"] == b["seed"]


def test_paired_statistics():
    a = {"q1": 0.5, "q2": 0.2, "q3": 0.3, "q4": 0.9}
    b = {"q1": 0.7, "q2": 0.1, "q3": 0.3, "q4": 1.0, "only_b": 1.0}   # only shared queries count
    p = rc.paired(a, b)
    assert p["queries"] == 4 and (p["wins"], p["ties"], p["losses"]) == (2, 1, 1)
    assert p["mean"] == pytest.approx((0.2 - 0.1 + 0.0 + 0.1) / 4)
    # a bootstrap mean of resampled differences lies within their range, around the mean
    assert -0.1 <= p["ci95"][0] <= p["mean"] <= p["ci95"][1] <= 0.2
    with pytest.raises(ValueError, match="no query"):
        rc.paired({"x": 1.0}, {"y": 1.0})
