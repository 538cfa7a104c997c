"""THE writer of model folders that PyTorch transformers / sentence-transformers load.

`CrossEncoder.save`, `BiEncoder.save` and training's export (train/loop.export_model,
train/bi_head.BiHead.export) all write through the two functions here, so a folder saved after
scoring and one exported after training are the same files:

  write_cross_encoder(path, cfg, params, tokenizer, ...)        an ST CrossEncoder / HF folder
  write_sentence_transformer(path, cfg, params, tokenizer, ...) an ST SentenceTransformer folder

Both write into `path` as it is; `save_folder(path, write, ...)` wraps one of them in
atomic.atomic_dir (an existing folder is replaced only once the new one is complete). Training
already writes inside its own atomic_dir and calls the writers directly.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Callable

import jax
import numpy as np

from ..atomic import atomic_dir
from ..batching import copy_tokenizer
from . import st_folder
from .causal_score import copy_st_files
from .checkpoint_files import lazy_checkpoint, read_checkpoint, write_safetensors
from .st_modules import set_activation
from .pretrained import save_pretrained
from .registry import family


def _tokenizer_for(tokenizer, max_length: int):
    """A copy saved with model_max_length = max_length: never mutate the live tokenizer (other
    threads may be tokenizing with it)."""
    tok = copy_tokenizer(tokenizer)
    tok.model_max_length = int(max_length)
    return tok


def write_cross_encoder(path: str | os.PathLike, cfg, params, tokenizer, *, max_length: int,
                        activation: str | None, source_dir: str | os.PathLike | None = None,
                        prompts: dict | None = None, default_prompt_name: str | None = None) -> Path:
    """config.json (with `activation` stored as ST reads it when it is one ST names: sigmoid,
    identity, tanh), model.safetensors, tokenizer files; `source_dir`'s ST files (a causal
    reranker's LogitScore tokens and chat-template modality, a CrossEncoder's prompts); and
    `prompts` in config_sentence_transformers.json when the source had none to copy."""
    path = Path(path)
    raw = cfg.raw_dict
    if activation in st_folder.CE_ACTIVATION_PATHS:
        raw = st_folder.with_ce_activation(raw, activation)
    cfg = dataclasses.replace(cfg, raw_json=json.dumps(raw))
    save_pretrained(path, cfg, jax.device_get(params), _tokenizer_for(tokenizer, max_length), head=True)
    if source_dir is not None:
        copy_st_files(Path(source_dir), path)
        # ST 6.3 reads the activation from config_sentence_transformers.json before config.json's
        set_activation(path, st_folder.CE_ACTIVATION_PATHS.get(activation))
    st_cfg = path / "config_sentence_transformers.json"
    if prompts and not st_cfg.is_file():
        st_cfg.write_text(json.dumps({"model_type": "CrossEncoder", "prompts": prompts,
                                      "default_prompt_name": default_prompt_name}, indent=2) + "\n")
    return path


def write_sentence_transformer(path: str | os.PathLike, cfg, params, tokenizer, mods: st_folder.SentenceModules, *,
                               max_seq_length: int, do_lower_case: bool, model_config: dict | None,
                               transformer_config: dict | None = None,
                               source_dir: str | os.PathLike | None = None) -> Path:
    """The encoder (config.json, model.safetensors from params["encoder"], tokenizer files) and
    the ST modules of `mods` with its dense_params (st_folder.write_st_folder). A CrossEncoder
    whose scores are Pooling -> Dense modules (hf/st_modules.py "pooled") is written this way too,
    with model_config's model_type "CrossEncoder". `source_dir`: the encoder folder the params came
    from; its pooler tensors are carried over unchanged (carry_pooler)."""
    path = Path(path)
    save_pretrained(path, cfg, {"encoder": jax.device_get(params["encoder"])},
                    _tokenizer_for(tokenizer, max_seq_length), head=False)
    table = family(cfg.family).table
    if source_dir is not None and table.prefix in _BARE_MODELS_WITH_POOLER:
        carry_pooler(Path(source_dir), path, prefix=f"{table.prefix}." if table.bare_prefixed else "")
    st_folder.write_st_folder(path, mods, hidden_size=cfg.hidden_size, max_seq_length=max_seq_length,
                              do_lower_case=do_lower_case, model_config=model_config,
                              transformer_config=transformer_config)
    return path


# Families whose bare transformers model (AutoModel) builds a pooler (BertModel, RobertaModel and
# its XLM-R / CamemBERT kin, MPNetModel); the others (ELECTRA, DistilBERT, DeBERTa-v2, ...) have none,
# so a source "pooler.*" there (a DeBERTa classifier's ContextPooler) would be an UNEXPECTED key.
_BARE_MODELS_WITH_POOLER = ("bert", "roberta", "mpnet")


def carry_pooler(source_dir: Path, path: Path, *, prefix: str = "") -> list[str]:
    """Copy the source checkpoint's pooler tensors (first-token dense + tanh) into path's
    model.safetensors, which the bare encoder lacks: we load an encoder without its pooler (mean /
    CLS pooling never reads it; it is not trained), but transformers' AutoModel builds one and,
    finding no weights, reports them MISSING / "newly initialized" (sentence-transformers prints
    it), which alarms users though no score reads it. Named as the export names its encoder
    (`prefix`; a classifier's "bert.pooler.*" -> "pooler.*"), cast to fp32 like the rest of the
    file (exact). Returns the names added."""
    src = lazy_checkpoint(source_dir)
    pooler = [k for k in src.keys() if k.startswith("pooler.") or ".pooler." in k]
    if not pooler:
        return []
    tensors = read_checkpoint(path)
    added = []
    for k in pooler:
        name = prefix + k[k.index("pooler."):]
        if name not in tensors:
            t = np.asarray(src[k])
            tensors[name] = t if t.dtype.kind in "iub" else t.astype(np.float32)
            added.append(name)
    if added:
        write_safetensors(tensors, path / "model.safetensors")
    return added


def save_folder(path: str | os.PathLike, write: Callable[..., Path], *args, **kwargs) -> Path:
    """`write(tmp, *args, **kwargs)` into a temporary folder that then replaces `path` atomically."""
    with atomic_dir(path) as tmp:
        write(tmp, *args, **kwargs)
    return Path(path)
