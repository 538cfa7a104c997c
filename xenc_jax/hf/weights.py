"""HF checkpoint keys <-> our param paths: one declarative table per family, named transforms.

The same table loads and saves (DESIGN principle 3). Loading is strict: every checkpoint tensor
is mapped or ignored on purpose by name, every param is filled, shapes are checked, and errors
list both sides. Nothing is guessed from suffixes.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Callable

import numpy as np

from ..models.config import EncoderConfig
from .family import TRANSFORMS, FamilyTable, Fused, Rule
from .registry import family

__all__ = ["WeightsError", "TRANSFORMS", "Rule", "Fused", "FamilyTable", "expected_keys", "params_from_hf",
           "params_to_hf"]


class WeightsError(ValueError):
    """A checkpoint does not fit the model: missing/unexpected tensors or wrong shapes."""


def _legacy_rename(key: str) -> str:
    # Old TF-converted checkpoints name LayerNorm params gamma/beta; HF renames them on load too.
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


def _renamed_keys(tensors, table: FamilyTable, source) -> dict[str, str]:
    """Our name of each checkpoint key -> the key: legacy LayerNorm names, then the table's renames
    (another layout of the same tensors). Two keys that name one tensor are an error, not a pick."""
    rules = [(re.compile(pattern), repl) for pattern, repl in table.renames]
    names: dict[str, str] = {}
    for key in tensors:
        name = _legacy_rename(key)
        for pattern, repl in rules:
            name = pattern.sub(repl, name)
        if name in names:
            where = f"the checkpoint in {source}" if source is not None else "the checkpoint"
            raise WeightsError(f"{where} holds {names[name]!r} and {key!r}, two layouts of the same tensor "
                               f"({name!r}); keep one of them")
        names[name] = key
    return names


def _needs_rule(rule: Rule, cfg: EncoderConfig) -> bool:
    if "token_type" in rule.ours and cfg.type_vocab_size == 0:
        return False
    if "embeddings_project" in rule.ours and cfg.embedding_size == cfg.hidden_size:
        return False
    return True


def _filled(rule: Rule | Fused, key: str, fill: Callable[[str], str]) -> Rule | Fused:
    if isinstance(rule, Fused):
        return Fused(key, tuple((fill(path), t) for path, t in rule.parts))
    return Rule(key, fill(rule.ours), rule.transform)


def _paths(rule: Rule | Fused) -> tuple[str, ...]:
    return rule.paths if isinstance(rule, Fused) else (rule.ours,)


def expected_keys(cfg: EncoderConfig, *, head: bool, prefixed: bool) -> dict[str, Rule | Fused]:
    """HF key -> rule (with layer index filled in) for this config."""
    table = family(cfg.family).table
    p = table.prefix + "." if prefixed else ""
    wanted = (lambda r: True) if table.needs is None else (lambda r: table.needs(r.ours, cfg))
    out: dict[str, Rule | Fused] = {}
    for rule in table.encoder:
        if not _needs_rule(rule, cfg):
            continue
        layers = range(cfg.num_layers) if "{i}" in rule.hf else [None]
        for i in layers:
            fill = (lambda s: s.format(i=i)) if i is not None else (lambda s: s)
            filled = _filled(rule, p + fill(rule.hf), fill)
            if wanted(filled):
                out[filled.hf] = filled
    if head:
        for rule in table.head:
            filled = _filled(rule, rule.hf.format(p=p), lambda s: s)
            if wanted(filled):
                out[filled.hf] = filled
    return out


def _to_ours(rule: Rule | Fused, tensor: np.ndarray, cfg: EncoderConfig, shapes) -> tuple[list, list[str]]:
    """[(our path, value)] of one HF tensor, and shape problems (our path -> expected shape)."""
    if isinstance(rule, Fused):
        n = len(rule.parts)
        if tensor.ndim == 0 or tensor.shape[0] % n:
            return [], [f"{rule.hf} {tuple(tensor.shape)}: first axis not {n} equal parts "
                        f"({', '.join(rule.paths)})"]
    try:
        if isinstance(rule, Fused):
            pieces = [(path, TRANSFORMS[t][0](chunk, cfg))
                      for (path, t), chunk in zip(rule.parts, np.split(tensor, len(rule.parts), axis=0))]
        else:
            pieces = [(rule.ours, TRANSFORMS[rule.transform][0](tensor, cfg))]
    except ValueError:   # a reshaping transform (split_heads, ...) cannot take this shape: name it
        paths = rule.paths if isinstance(rule, Fused) else (rule.ours,)
        return [], [f"{rule.hf} {tuple(tensor.shape)} -> " + ", ".join(
            f"{p}, expected {tuple(shapes[p])}" if shapes is not None and p in shapes else p for p in paths)]
    bad = [f"{rule.hf} {tuple(tensor.shape)} -> {path} {tuple(v.shape)}, expected {tuple(shapes[path])}"
           for path, v in pieces
           if shapes is not None and path in shapes and tuple(v.shape) != tuple(shapes[path])]
    return pieces, bad


def _to_hf(rule: Rule | Fused, ours: dict, cfg: EncoderConfig) -> np.ndarray:
    if isinstance(rule, Fused):
        return np.concatenate([TRANSFORMS[t][1](np.asarray(ours[path]), cfg) for path, t in rule.parts], axis=0)
    return TRANSFORMS[rule.transform][1](np.asarray(ours[rule.ours]), cfg)


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for name in parents:
        tree = tree.setdefault(name, {})
    tree[leaf] = value


def _get(tree: dict, path: str):
    for name in path.split("/"):
        tree = tree[name]
    return tree


def flat_paths(tree: dict, prefix="") -> dict[str, object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(flat_paths(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


class _Renamed:
    """A read-only view of a tensor mapping under legacy-renamed keys (nothing is read)."""

    def __init__(self, raw, renamed: dict[str, str]):
        self._raw, self._names = raw, renamed

    def __contains__(self, key) -> bool:
        return key in self._names

    def __getitem__(self, key):
        return self._raw[self._names[key]]

    def __iter__(self):
        return iter(self._names)


@dataclasses.dataclass
class Conversion:
    params: dict                 # nested dict of numpy arrays
    missing_head: list[str]      # head params absent from the checkpoint (to be initialised)
    ignored: list[str]           # checkpoint tensors dropped on purpose
    missing_head_keys: list[str] = dataclasses.field(default_factory=list)  # their HF tensor names


def params_from_hf(tensors, cfg: EncoderConfig, *, head: bool, shapes: dict[str, tuple] | None = None,
                   place: Callable | None = None, source=None) -> Conversion:
    """Map HF tensors onto our param tree. `shapes`: our path -> expected shape (from eval_shape).

    tensors: a mapping, read once per key in table order (checkpoint_files.LazyTensors reads
    each on access). place(path, array) -> what to store (e.g. the array put straight into its
    mesh sharding, so the host copy can go at once); None stores the numpy arrays.
    source: the model folder the tensors and cfg came from, named in a mismatch error."""
    table = family(cfg.family).table
    names = _renamed_keys(tensors, table, source)
    prefixed = any(k.startswith(table.prefix + ".") for k in names)
    p = table.prefix + "." if prefixed else ""
    # a tied tensor saved only under its source's name is read from the source (HF ties them)
    stand_ins = {p + k: p + s for k, s in table.tied.items() if p + k not in names and p + s in names}
    tensors = _Renamed(tensors, {**names, **{k: names[s] for k, s in stand_ins.items()}})
    want = expected_keys(cfg, head=True, prefixed=prefixed)
    head_keys = set(want) - set(expected_keys(cfg, head=False, prefixed=prefixed))
    params: dict = {}
    used, ignored, missing_head, bad_shapes, missing_head_keys = set(), [], [], [], []
    for key, rule in want.items():
        is_head = key in head_keys
        if is_head and not head:
            continue
        if key not in tensors:
            if is_head:
                missing_head.append(rule.ours)
                missing_head_keys.append(key)
            continue
        pieces, bad = _to_ours(rule, np.asarray(tensors[key]), cfg, shapes)
        bad_shapes += bad
        for path, value in pieces:
            _set(params, path, value if place is None or bad else place(path, value))
        del pieces
        used.add(key)
    used |= {s for k, s in stand_ins.items() if k in used}
    patterns = [re.compile(p) for p in table.ignored]
    unexpected = []
    for key in tensors:
        if key in used:
            continue
        if (key in head_keys and not head) or any(p.fullmatch(key) for p in patterns):
            ignored.append(key)
        else:
            unexpected.append(key)
    missing = [k for k, r in want.items() if k not in tensors and k not in head_keys]
    problems = []
    if missing:
        problems.append(f"missing from the checkpoint ({len(missing)}): {missing[:20]}")
    if unexpected:
        problems.append(f"in the checkpoint but not used by a {cfg.family!r} model ({len(unexpected)}): "
                        f"{sorted(unexpected)[:20]}")
    if bad_shapes:
        problems.append("wrong shapes: " + "; ".join(bad_shapes[:20]))
    if problems:
        where = f"the checkpoint in {source}" if source is not None else "checkpoint"
        config = f"{Path(source) / 'config.json'}: " if source is not None else ""
        raise WeightsError(f"{where} does not match the {cfg.family!r} config ({config}{cfg.num_layers} layers, "
                           f"hidden {cfg.hidden_size}): " + " | ".join(problems))
    return Conversion(params, missing_head, sorted(ignored), missing_head_keys)


def params_to_hf(params: dict, cfg: EncoderConfig, *, head: bool) -> dict[str, np.ndarray]:
    """Our param tree -> HF state dict (task layout with prefix when `head`, bare otherwise, but for
    a table whose bare model keeps the prefix: bare_prefixed)."""
    out = {}
    ours = flat_paths(params)
    rules = expected_keys(cfg, head=head, prefixed=head or family(cfg.family).table.bare_prefixed)
    for key, rule in rules.items():
        for path in _paths(rule):
            if path not in ours:
                raise WeightsError(f"param {path} (for HF key {key}) is missing from the params")
        out[key] = np.ascontiguousarray(_to_hf(rule, ours, cfg))
    leftover = set(ours) - {path for r in rules.values() for path in _paths(r)}
    if head and leftover:
        raise WeightsError(f"params with no HF name: {sorted(leftover)}")
    return out
