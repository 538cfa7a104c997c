"""HF checkpoint keys <-> our param paths: one declarative table per family, named transforms.

The same table loads and saves (DESIGN principle 3). Loading is strict: every checkpoint tensor
is mapped or ignored on purpose by name, every param is filled, shapes are checked, and errors
list both sides. Nothing is guessed from suffixes.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Callable

import numpy as np

from .configs import EncoderConfig


class WeightsError(ValueError):
    """A checkpoint does not fit the model: missing/unexpected tensors or wrong shapes."""


# ---- named transforms: (to_ours, to_hf), each a function of (array, cfg) ----
def _heads(cfg):
    return cfg.num_heads, cfg.head_dim


TRANSFORMS: dict[str, tuple[Callable, Callable]] = {
    "identity": (lambda x, c: x, lambda x, c: x),
    # torch Linear stores [out, in]; flax kernels are [in, out]
    "linear": (lambda x, c: x.T, lambda x, c: x.T),
    # q/k/v: [heads*head_dim, embed] -> [embed, heads, head_dim] so `heads` can be sharded
    "split_heads": (lambda x, c: x.T.reshape(x.shape[1], *_heads(c)),
                    lambda x, c: x.reshape(x.shape[0], -1).T),
    "split_heads_bias": (lambda x, c: x.reshape(*_heads(c)), lambda x, c: x.reshape(-1)),
    # attention output: [embed, heads*head_dim] -> [heads, head_dim, embed]
    "merge_heads": (lambda x, c: x.T.reshape(*_heads(c), x.shape[0]),
                    lambda x, c: x.reshape(-1, x.shape[-1]).T),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str             # HF key, "{i}" = layer index; relative to the base prefix for encoder rules
    ours: str           # our param path, "/"-separated, "{i}" = layer index
    transform: str = "identity"


def _linear(hf: str, ours: str, kernel="linear", bias="identity") -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}/kernel", kernel), Rule(f"{hf}.bias", f"{ours}/bias", bias)]


def _norm(hf: str, ours: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}/scale"), Rule(f"{hf}.bias", f"{ours}/bias")]


def _attention(q, k, v, o) -> list[Rule]:
    at = "encoder/layer_{i}/attention"
    return (_linear(q, f"{at}/query", "split_heads", "split_heads_bias")
            + _linear(k, f"{at}/key", "split_heads", "split_heads_bias")
            + _linear(v, f"{at}/value", "split_heads", "split_heads_bias")
            + _linear(o, f"{at}/out", "merge_heads"))


_EMB = "encoder/embeddings"
_L = "encoder/layer_{i}"

_BERT_LIKE_ENCODER = (
    [Rule("embeddings.word_embeddings.weight", f"{_EMB}/word/embedding"),
     Rule("embeddings.position_embeddings.weight", f"{_EMB}/position/embedding"),
     Rule("embeddings.token_type_embeddings.weight", f"{_EMB}/token_type/embedding")]
    + _norm("embeddings.LayerNorm", f"{_EMB}/norm")
    + _attention(*(f"encoder.layer.{{i}}.attention.self.{n}" for n in ("query", "key", "value")),
                 "encoder.layer.{i}.attention.output.dense")
    + _norm("encoder.layer.{i}.attention.output.LayerNorm", f"{_L}/attention_norm")
    + _linear("encoder.layer.{i}.intermediate.dense", f"{_L}/mlp_in")
    + _linear("encoder.layer.{i}.output.dense", f"{_L}/mlp_out")
    + _norm("encoder.layer.{i}.output.LayerNorm", f"{_L}/mlp_norm")
)

_DISTILBERT_ENCODER = (
    [Rule("embeddings.word_embeddings.weight", f"{_EMB}/word/embedding"),
     Rule("embeddings.position_embeddings.weight", f"{_EMB}/position/embedding")]
    + _norm("embeddings.LayerNorm", f"{_EMB}/norm")
    + _attention(*(f"transformer.layer.{{i}}.attention.{n}" for n in ("q_lin", "k_lin", "v_lin", "out_lin")))
    + _norm("transformer.layer.{i}.sa_layer_norm", f"{_L}/attention_norm")
    + _linear("transformer.layer.{i}.ffn.lin1", f"{_L}/mlp_in")
    + _linear("transformer.layer.{i}.ffn.lin2", f"{_L}/mlp_out")
    + _norm("transformer.layer.{i}.output_layer_norm", f"{_L}/mlp_norm")
)


@dataclasses.dataclass(frozen=True)
class FamilyTable:
    prefix: str                 # base-model prefix inside task checkpoints ("bert" -> "bert.embeddings...")
    encoder: tuple[Rule, ...]   # keys relative to the prefix
    head: tuple[Rule, ...]      # top-level keys of the head ("{p}" = the prefix, if the checkpoint has one)
    ignored: tuple[str, ...]    # regexes of tensors that are harmless to drop, on purpose


_BUFFERS = (r"(.*\.)?embeddings\.position_ids", r"(.*\.)?embeddings\.token_type_ids")

TABLES: dict[str, FamilyTable] = {
    "bert": FamilyTable(
        "bert", tuple(_BERT_LIKE_ENCODER),
        tuple(_linear("{p}pooler.dense", "head/dense") + _linear("classifier", "head/out")),
        _BUFFERS + (r"cls\..*",)),  # pre-training heads (MLM/NSP) of bert-base-style checkpoints
    "roberta": FamilyTable(
        "roberta", tuple(_BERT_LIKE_ENCODER),
        tuple(_linear("classifier.dense", "head/dense") + _linear("classifier.out_proj", "head/out")),
        # RobertaModel's pooler is not used by RobertaForSequenceClassification; lm_head = MLM head
        _BUFFERS + (r"(roberta\.)?pooler\..*", r"lm_head\..*")),
    "electra": FamilyTable(
        "electra", tuple(_BERT_LIKE_ENCODER + _linear("embeddings_project", "encoder/embeddings_project")),
        tuple(_linear("classifier.dense", "head/dense") + _linear("classifier.out_proj", "head/out")),
        _BUFFERS + (r"discriminator_predictions\..*", r"generator_predictions\..*", r"generator_lm_head\..*")),
    "distilbert": FamilyTable(
        "distilbert", tuple(_DISTILBERT_ENCODER),
        tuple(_linear("pre_classifier", "head/dense") + _linear("classifier", "head/out")),
        _BUFFERS + (r"vocab_transform\..*", r"vocab_layer_norm\..*", r"vocab_projector\..*")),
}
TABLES["xlm-roberta"] = TABLES["roberta"]


def _legacy_rename(key: str) -> str:
    # Old TF-converted checkpoints name LayerNorm params gamma/beta; HF renames them on load too.
    return re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key))


def _needs_rule(rule: Rule, cfg: EncoderConfig) -> bool:
    if "token_type" in rule.ours and cfg.type_vocab_size == 0:
        return False
    if "embeddings_project" in rule.ours and cfg.embedding_size == cfg.hidden_size:
        return False
    return True


def expected_keys(cfg: EncoderConfig, *, head: bool, prefixed: bool) -> dict[str, Rule]:
    """HF key -> rule (with layer index filled in) for this config."""
    table = TABLES[cfg.family]
    p = table.prefix + "." if prefixed else ""
    out: dict[str, Rule] = {}
    for rule in table.encoder:
        if not _needs_rule(rule, cfg):
            continue
        layers = range(cfg.num_layers) if "{i}" in rule.hf else [None]
        for i in layers:
            fill = (lambda s: s.format(i=i)) if i is not None else (lambda s: s)
            out[p + fill(rule.hf)] = Rule(p + fill(rule.hf), fill(rule.ours), rule.transform)
    if head:
        for rule in table.head:
            key = rule.hf.format(p=p)
            out[key] = Rule(key, rule.ours, rule.transform)
    return out


def _set(tree: dict, path: str, value) -> None:
    *parents, leaf = path.split("/")
    for name in parents:
        tree = tree.setdefault(name, {})
    tree[leaf] = value


def _get(tree: dict, path: str):
    for name in path.split("/"):
        tree = tree[name]
    return tree


def _flat_paths(tree: dict, prefix="") -> dict[str, object]:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat_paths(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out


@dataclasses.dataclass
class Conversion:
    params: dict                 # nested dict of numpy arrays
    missing_head: list[str]      # head params absent from the checkpoint (to be initialised)
    ignored: list[str]           # checkpoint tensors dropped on purpose


def params_from_hf(tensors: dict[str, np.ndarray], cfg: EncoderConfig, *, head: bool,
                   shapes: dict[str, tuple] | None = None) -> Conversion:
    """Map HF tensors onto our param tree. `shapes`: our path -> expected shape (from eval_shape)."""
    table = TABLES[cfg.family]
    tensors = {_legacy_rename(k): v for k, v in tensors.items()}
    prefixed = any(k.startswith(table.prefix + ".") for k in tensors)
    want = expected_keys(cfg, head=True, prefixed=prefixed)
    head_keys = set(want) - set(expected_keys(cfg, head=False, prefixed=prefixed))
    params: dict = {}
    used, ignored, missing_head, bad_shapes = set(), [], [], []
    for key, rule in want.items():
        is_head = key in head_keys
        if is_head and not head:
            continue
        if key not in tensors:
            if is_head:
                missing_head.append(rule.ours)
            continue
        value = TRANSFORMS[rule.transform][0](np.asarray(tensors[key]), cfg)
        if shapes is not None and rule.ours in shapes and tuple(value.shape) != tuple(shapes[rule.ours]):
            bad_shapes.append(f"{key} {tuple(tensors[key].shape)} -> {rule.ours} {tuple(value.shape)}, "
                              f"expected {tuple(shapes[rule.ours])}")
        _set(params, rule.ours, value)
        used.add(key)
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
        raise WeightsError(f"checkpoint does not match the {cfg.family!r} config "
                           f"({cfg.num_layers} layers, hidden {cfg.hidden_size}): " + " | ".join(problems))
    return Conversion(params, missing_head, sorted(ignored))


def params_to_hf(params: dict, cfg: EncoderConfig, *, head: bool) -> dict[str, np.ndarray]:
    """Our param tree -> HF state dict (task layout with prefix when `head`, bare otherwise)."""
    out = {}
    ours = _flat_paths(params)
    rules = expected_keys(cfg, head=head, prefixed=head)
    for key, rule in rules.items():
        if rule.ours not in ours:
            raise WeightsError(f"param {rule.ours} (for HF key {key}) is missing from the params")
        out[key] = np.ascontiguousarray(TRANSFORMS[rule.transform][1](np.asarray(ours[rule.ours]), cfg))
    leftover = set(ours) - {r.ours for r in rules.values()}
    if head and leftover:
        raise WeightsError(f"params with no HF name: {sorted(leftover)}")
    return out
