"""The config digest written with every checkpoint: each setting that changes the data order or
the math of a run, flattened to dotted keys, plus the identity (size and sha256) of the model's
files and the training data file. A resume compares it with the checkpoint's and refuses to go on
when a key differs, naming the keys, unless the config lists them in `resume_may_change`.

Left out on purpose: where things go and how often (output_dir, name, log_every, eval_every,
checkpoint_every, keep_checkpoints, async_checkpoint, export_best, progress), evaluation (it
does not change the weights), and the mesh and sharding (a restore onto another mesh is exact up
to float32 reduction order, and moving a run to other hardware is a normal thing to do), nor
rematerialisation (the same math, recomputed; switched on when a resumed run needs less memory), nor
train.extra_columns (a check only: whenever both settings read a file, they read the same rows). The
paths of the model and the data are replaced by their contents' identity, so a moved or copied
directory still resumes while an edited file does not.
"""
from __future__ import annotations

from pathlib import Path

from ..identity import file_identity, model_identity
from .config import to_dict

IGNORED = ("name", "output_dir", "resume", "resume_may_change", "log_every", "eval_every", "progress",
           "checkpoint_every", "keep_checkpoints", "async_checkpoint", "export_best", "evaluator", "test",
           "sharding", "mesh", "remat", "model", "train.path", "train.extra_columns")
__all__ = ["config_digest", "differences", "file_identity", "model_identity"]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = prefix + k
        if isinstance(v, dict) and v and k != "loss_kwargs":
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _ignored(key: str) -> bool:
    return any(key == i or key.startswith(i + ".") for i in IGNORED)


def config_digest(cfg, model_dir) -> dict:
    """JSON-able {dotted key: value} of everything that makes a run what it is."""
    flat = {k: v for k, v in _flatten(to_dict(cfg)).items() if not _ignored(k)}
    flat = {k: (str(v) if not isinstance(v, (int, float, str, bool, list, dict, type(None))) else v)
            for k, v in flat.items()}
    for name, ident in model_identity(model_dir).items():
        flat[f"model.files.{name}"] = ident
    path = Path(cfg.train.path)  # a directory (Parquet shards, a datasets folder): each file's identity
    if path.is_dir():
        flat["train.file"] = model_identity(path)
    elif path.is_file() or cfg.train.resolved_format() != "hf":
        flat["train.file"] = file_identity(path)
    else:  # a hub id: its name (a hub data set can change under it, as a model id's files can)
        flat["train.file"] = {"hub_id": cfg.train.path.removeprefix("hf://")}
    return flat


def may_change_matches(key: str, allowed) -> bool:
    """`model.files` allows every model file; `optim` every optimizer key."""
    return any(key == a or key.startswith(a + ".") for a in allowed)


def differences(old: dict, new: dict, allowed=()) -> list[str]:
    """'key: old -> new' for every key that differs and is not allowed to."""
    out = []
    for k in sorted(set(old) | set(new)):
        if old.get(k, "<absent>") != new.get(k, "<absent>") and not may_change_matches(k, allowed):
            out.append(f"{k}: {_short(old.get(k, '<absent>'))} -> {_short(new.get(k, '<absent>'))}")
    return out


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."
