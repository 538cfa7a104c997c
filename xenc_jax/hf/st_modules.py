"""A sentence-transformers CrossEncoder folder as the chain of modules it computes
(modules.json), read and written with ST 6.3's semantics (base/model.py, cross_encoder/model.py).

ST passes one features dict through the modules; the CrossEncoder's score is features["scores"]:
  Transformer  sequence-classification -> "scores"; text-generation -> "causal_logits";
               feature-extraction -> "token_embeddings" (sentence_bert_config.json: transformer_task)
  Pooling      "token_embeddings" -> "sentence_embedding" (any of ST's modes)
  Dense        module_input_name -> module_output_name (default: the input's), activation, residual
  Normalize    module_input_name -> module_output_name
  Dropout      identity at inference
  LogitScore   "causal_logits" -> "scores" (one or two tokens; hf/causal_score.py)
`read_chain` follows the names, so what is computed here is what ST computes; a module or a
flow we do not compute exactly is an error naming the module and modules.json. The three chains:
  "classifier"  Transformer(seq-cls): the HF model with its head (a plain HF folder too)
  "lm"          Transformer(text-generation) -> LogitScore
  "pooled"      Transformer(feature-extraction) -> Pooling -> Dense/Normalize... -> "scores"
                (the ettin-reranker layout): the bi-encoder's pooling and Dense ops
                (models/pooling.sentence_head), whose last op writes the scores.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from . import st_folder
from .model_folder import ModelFolderError, is_st_cross_encoder, read_json
from .st_transformer import TASK_OUTPUTS, read_transformer_file

# modules.json type (last dotted part, under sentence_transformers.) -> what we compute
CE_MODULES = ("Transformer", "Pooling", "Dense", "Normalize", "Dropout", "LogitScore")


@dataclasses.dataclass(frozen=True)
class CrossEncoderChain:
    """What a CrossEncoder folder computes (module docstring). encoder_dir: the Transformer
    module's folder (config.json, weights, tokenizer); transformer: its sentence_bert_config.json
    ({} when none); pooled: for "pooled", the modules after the Transformer as the bi-encoder
    reads them (pooling, ops, dense_params, io_names)."""
    model_dir: Path
    encoder_dir: Path
    kind: str                # "classifier" | "lm" | "pooled"
    task: str                # the Transformer's transformer_task
    transformer: dict = dataclasses.field(default_factory=dict)
    pooled: st_folder.SentenceModules | None = None
    is_st: bool = False

    @property
    def num_labels(self) -> int | None:
        """Scores per pair when the chain fixes it (the last Dense's out_features; 1 for LogitScore)."""
        if self.kind == "lm":
            return 1
        if self.kind == "pooled":
            return [spec for kind, spec in self.pooled.ops if kind == "dense"][-1].out_features
        return None


def _plain_chain(model_dir: Path) -> CrossEncoderChain:
    """ST's default modules for a plain HF folder (CrossEncoder._load_default_modules): a causal LM
    (architectures[0] "...ForCausalLM") -> LogitScore(yes, no), else sequence classification."""
    cfg_path = model_dir / "config.json"
    raw = read_json(cfg_path) if cfg_path.is_file() else {}
    archs = raw.get("architectures") or [""]
    causal = isinstance(archs[0], str) and archs[0].endswith("ForCausalLM")
    return CrossEncoderChain(model_dir, model_dir, "lm" if causal else "classifier",
                             "text-generation" if causal else "sequence-classification")


def _entries(model_dir: Path) -> list[tuple[str, Path, str]]:
    """(class name, folder, type) per modules.json entry; a type outside ST's modules we compute is an error."""
    where = model_dir / "modules.json"
    entries = read_json(where, "module list", expect=list)
    if not entries:
        raise ModelFolderError(f"{where} must be a non-empty JSON list of modules")
    out = []
    for i, e in enumerate(entries):
        typ = e.get("type") if isinstance(e, dict) else None
        if not isinstance(typ, str):
            raise ModelFolderError(f"{where}: entry {i} is not a module object with a 'type'")
        name = typ.rsplit(".", 1)[-1]
        if not typ.startswith("sentence_transformers.") or name not in CE_MODULES:
            raise ModelFolderError(
                f"{where}: entry {i} is a {typ} module, which xenc_jax does not compute (CrossEncoder modules it "
                f"computes: {', '.join(CE_MODULES)}); a score without it would not be this model's, so the "
                "folder is refused")
        out.append((name, model_dir / str(e.get("path") or ""), typ))
    return out


def read_chain(model_dir: Path) -> CrossEncoderChain:
    """The chain of a CrossEncoder folder (module docstring); a bi-encoder folder or a plain HF
    folder gets ST's default CrossEncoder modules."""
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file() or not is_st_cross_encoder(model_dir):
        return _plain_chain(model_dir)
    where = model_dir / "modules.json"
    entries = _entries(model_dir)
    if entries[0][0] != "Transformer" or any(name == "Transformer" for name, _, _ in entries[1:]):
        raise ModelFolderError(f"{where}: expected one Transformer module, first; found "
                               f"{', '.join(name for name, _, _ in entries)}")
    folder = entries[0][1]
    tcfg = read_transformer_file(folder) or {}
    task = tcfg.get("transformer_task", "feature-extraction")
    if task not in TASK_OUTPUTS:
        raise ModelFolderError(f"{where}: the Transformer's transformer_task {task!r} is not computed here "
                               f"(supported: {', '.join(TASK_OUTPUTS)})")
    feature = tcfg.get("module_output_name") or TASK_OUTPUTS[task][1]
    rest = [(n, f) for n, f, _ in entries[1:] if n != "Dropout"]   # Dropout: identity at inference
    if task == "feature-extraction":
        return CrossEncoderChain(model_dir, folder, "pooled", task, tcfg, _read_pooled(where, feature, rest), True)
    want = {"sequence-classification": [], "text-generation": ["LogitScore"]}[task]
    if [n for n, _ in rest] != want or feature != TASK_OUTPUTS[task][1]:
        raise ModelFolderError(
            f"{where}: a {task} Transformer writing {feature!r} followed by {[n for n, _ in rest] or 'nothing'} is "
            f"not a chain xenc_jax computes (it computes: a sequence-classification Transformer alone; a "
            f"text-generation Transformer -> LogitScore; a feature-extraction Transformer -> Pooling -> Dense "
            f"modules writing 'scores')")
    if task == "text-generation":
        _check_logit_score(rest[0][1])
    return CrossEncoderChain(model_dir, folder, "classifier" if task == "sequence-classification" else "lm",
                             task, tcfg, None, True)


def _check_logit_score(folder: Path) -> None:
    cfg = read_json(folder / "config.json", "LogitScore config")
    if cfg.get("module_input_name", "causal_logits") != "causal_logits":
        raise ModelFolderError(f"{folder / 'config.json'}: LogitScore module_input_name "
                               f"{cfg['module_input_name']!r} is not the Transformer's 'causal_logits'")


def _read_pooled(where: Path, feature: str, rest: list[tuple[str, Path]]) -> st_folder.SentenceModules:
    """Pooling then Dense / Normalize ops, one vector flowing from each into the next, the last
    writing "scores" (ST reads features["scores"])."""
    names = [n for n, _ in rest]
    if not rest or rest[0][0] != "Pooling" or names.count("Pooling") != 1 or feature != "token_embeddings":
        raise ModelFolderError(
            f"{where}: a feature-extraction Transformer (writing {feature!r}) must be followed by one Pooling "
            f"and then Dense / Normalize modules ending in 'scores'; found {names or 'nothing'}")
    pool_cfg_path = rest[0][1] / "config.json"
    pool_cfg = read_json(pool_cfg_path, "Pooling config")
    modes, include_prompt = st_folder.pooling_modes(pool_cfg, pool_cfg_path)
    dim = pool_cfg.get("embedding_dimension", pool_cfg.get("word_embedding_dimension"))
    ops, params, io, stream = [], [], [], "sentence_embedding"
    for name, folder in rest[1:]:
        if name == "Dense":
            spec, prm, (name_in, name_out) = st_folder.read_dense_io(folder)
            ops.append(("dense", spec))
            params.append(prm)
        elif name == "Normalize":
            cfg = read_json(folder / "config.json", "Normalize config") if (folder / "config.json").is_file() else {}
            name_in = cfg.get("module_input_name") or "sentence_embedding"
            name_out = cfg.get("module_output_name") or name_in
            ops.append(("normalize", None))
        else:
            raise ModelFolderError(f"{where}: a {name} module ({folder.name}) after the Pooling is not computed here "
                                   "(supported after it: Dense, Normalize, Dropout)")
        if name_in != stream:
            raise ModelFolderError(f"{where}: the {name} module in {folder.name} reads {name_in!r}, but the "
                                   f"module before it wrote {stream!r}; xenc_jax computes chains where each module "
                                   "reads what the one before it wrote")
        io.append((name_in, name_out))
        stream = name_out
    if stream != "scores":
        raise ModelFolderError(f"{where}: the last module writes {stream!r}, not 'scores': this CrossEncoder has no "
                               "score head (a Dense with module_output_name 'scores' computes it)")
    return st_folder.SentenceModules(encoder_dir=where.parent, pooling_modes=modes, include_prompt=include_prompt,
                                     ops=tuple(ops), dense_params=tuple(params), pooling_dim=None if dim is None
                                     else int(dim), is_st=True, io_names=tuple(io))


def set_activation(path: Path, activation_path: str | None) -> None:
    """config_sentence_transformers.json's activation_fn (which ST 6.3 reads before config.json's)
    set to `activation_path`, or removed when it is None (a callable ST cannot name)."""
    st_cfg = Path(path) / "config_sentence_transformers.json"
    if not st_cfg.is_file():
        return
    cfg = read_json(st_cfg)
    if cfg.get("model_type") != "CrossEncoder":
        return
    if activation_path is None:
        cfg.pop("activation_fn", None)
    else:
        cfg["activation_fn"] = activation_path
    st_cfg.write_text(json.dumps(cfg, indent=2) + "\n")


def stored_activation(model_config: dict, raw_config: dict, where: Path) -> str | None:
    """The torch class path of the activation ST 6.3 applies to a CrossEncoder's scores, or None
    for the default (sigmoid for 1 label, else identity): config_sentence_transformers.json's
    activation_fn, else config.json's sentence_transformers.activation_fn, else its older
    sbert_ce_default_activation_function. ST skips a path outside torch (untrusted code); a torch
    activation we do not apply is an error, never a silently different score."""
    candidates = (model_config.get("activation_fn"),
                  (raw_config.get("sentence_transformers") or {}).get("activation_fn")
                  if "activation_fn" in (raw_config.get("sentence_transformers") or {})
                  else raw_config.get("sbert_ce_default_activation_function"))
    for path in candidates:
        if isinstance(path, str) and path.startswith("torch."):
            if path not in st_folder.CE_ACTIVATIONS:
                raise ModelFolderError(
                    f"{where}: its stored activation_fn {path!r} is not one xenc_jax applies (supported: "
                    f"{', '.join(sorted(st_folder.CE_ACTIVATIONS))}); pass activation_fn= to choose one")
            return path
    return None


def stored_activation_name(model_dir: Path) -> str | None:
    """The activation (sigmoid / identity / tanh) a CrossEncoder folder stores, read as ST 6.3 reads
    it (stored_activation), or None: training's export keeps it, as ST's fine-tuning does."""
    model_dir = Path(model_dir)
    st_cfg, raw = model_dir / "config_sentence_transformers.json", model_dir / "config.json"
    path = stored_activation(read_json(st_cfg) if st_cfg.is_file() else {},
                             read_json(raw) if raw.is_file() else {}, model_dir)
    return None if path is None else st_folder.CE_ACTIVATIONS[path]
