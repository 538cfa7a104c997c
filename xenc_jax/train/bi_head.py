"""The head after the encoder that training uses and exports: a bi-encoder's Pooling, Dense and
Normalize modules (hf/st_folder.py), as changed by the config's `pooling` / `dense` /
`normalize` settings; or a cross-encoder's Pooling -> Dense ... -> "scores" chain
(hf/st_modules.py kind "pooled", the ettin-reranker layout), whose Dense modules are its score
head: the same embed function, its last Dense writing the logits (build_score_head).

The train and eval steps embed with step.bi_encoder_apply, model_fns.make_embed_fn per row
(BiEncoder's own function), so the loss sees exactly the embeddings that
BiEncoder and PyTorch sentence-transformers compute on the export. Trained Dense weights live
in the params tree as params["dense"] (a list, one dict per Dense module); frozen ones are
constants of the step (no gradient, no optimizer state, no weight decay).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import numpy as np

from ..chat_format import text_encoder
from ..hf import st_folder, st_modules
from ..hf.model_folder import read_json
from ..hf.pretrained import load_pretrained
from ..hf.save import write_sentence_transformer
from ..hf.st_transformer import InputFormat, input_format
from . import step as S


@dataclasses.dataclass(frozen=True)
class BiHead:
    modules: st_folder.SentenceModules   # what is trained and exported (source Dense weights)
    train_dense: bool
    do_lower_case: bool
    # the modules compute a CrossEncoder's scores (st_modules "pooled"): exported as a CrossEncoder
    cross_encoder: bool = False

    @property
    def has_dense(self) -> bool:
        return bool(self.modules.dense_params)

    @property
    def trains_dense(self) -> bool:
        return self.train_dense and self.has_dense

    def init_params(self, encoder_params: dict) -> dict:
        """Training params: {"encoder": ...} (+ "dense": [...] when the Dense modules train)."""
        params = dict(encoder_params)
        if self.trains_dense:
            params["dense"] = [dict(p) for p in self.modules.dense_params]
        return params

    def param_shardings(self, plan, encoder_shardings: dict) -> dict:
        """The encoder's shardings plus replicated Dense weights (small)."""
        sh = dict(encoder_shardings)
        if self.trains_dense:
            sh["dense"] = jax.tree.map(lambda _: plan.replicated, [dict(p) for p in self.modules.dense_params])
        return sh

    def model_fn(self, module):
        """The embed_fn (fp32 [B, P, D]) of this head: what the evaluators run."""
        frozen = None if self.trains_dense else list(self.modules.dense_params)
        return S.embed_fn(module, self.modules.pooling_modes, self.modules.ops, frozen_dense=frozen)

    def apply_fn(self, module):
        """model_fn per training row: fp32 [R, D], what the losses take."""
        return S.per_row(self.model_fn(module))

    def input_format(self, tokenizer, model_cfg) -> InputFormat:
        """What the source Transformer takes, as ST 6.3 and BiEncoder read it (hf/st_transformer.py):
        each text a user message through the chat template, or plain text."""
        return input_format(self.modules.transformer, tokenizer, model_cfg.raw_dict.get("model_type"),
                            saved=self.modules.is_st, where=str(self.modules.encoder_dir))

    def text_encoder(self, tokenizer, model_cfg, max_length: int):
        """texts -> Encodings as BiEncoder tokenizes them for this model (chat_format.text_encoder,
        no prompt): training embeds the ids the trained model is later embedded with."""
        return text_encoder(tokenizer, max_length, self.input_format(tokenizer, model_cfg), self.do_lower_case,
                            str(self.modules.encoder_dir))

    def dense_params(self, params) -> list:
        """Host Dense weights to export: the trained ones, or the frozen source weights."""
        if self.trains_dense:
            return [{k: np.asarray(v, np.float32) for k, v in p.items()} for p in params["dense"]]
        return list(self.modules.dense_params)

    def export(self, path: Path, model_cfg, params, tokenizer, max_length: int, activation: str | None = None) -> Path:
        """An ST folder of exactly this head: encoder (save_pretrained), modules.json, Pooling with
        the modes used, Dense with the weights used, Normalize when used, sentence_bert_config
        (max_seq_length, the source's do_lower_case; a chat-template model's message modality_config,
        so ST feeds the export what it was trained on), the source's config_sentence_transformers.
        A cross-encoder's chain is written as CrossEncoder.save writes it (the same modules.json
        chain, model_type CrossEncoder, `activation` as ST 6.3 reads it). The source encoder's
        pooler tensors (untrained, read by no score) go along, so transformers reports none MISSING."""
        mods = self.modules.with_dense_params(self.dense_params(params))
        fmt = self.input_format(tokenizer, model_cfg)
        if self.cross_encoder:
            model_config = {**(self.modules.model_config or {}), "model_type": "CrossEncoder"}
            model_config.pop("activation_fn", None)   # ST's default when `activation` is not one it names
            if activation in st_folder.CE_ACTIVATION_PATHS:
                model_config["activation_fn"] = st_folder.CE_ACTIVATION_PATHS[activation]
            return write_sentence_transformer(path, model_cfg, params, tokenizer, mods, max_seq_length=max_length,
                                              do_lower_case=False, model_config=model_config,
                                              transformer_config=fmt.transformer_config("feature-extraction"),
                                              source_dir=self.modules.encoder_dir)
        return write_sentence_transformer(path, model_cfg, params, tokenizer, mods, max_seq_length=max_length,
                                          do_lower_case=self.do_lower_case, model_config=self.modules.model_config,
                                          transformer_config=fmt.transformer_config("feature-extraction")
                                          if fmt.message else None, source_dir=self.modules.encoder_dir)

    def load_exported(self, path: Path, encoder_params: dict) -> dict:
        """Training params of an export (e.g. the best model) from its encoder params and folder."""
        params = dict(encoder_params)
        if self.trains_dense:
            mods = st_modules.read_chain(path).pooled if self.cross_encoder else st_folder.read_st_folder(path)
            params["dense"] = [dict(p) for p in mods.dense_params]
        return params


def build_head(cfg, model_dir: Path, model_cfg) -> BiHead:
    """The head of a bi-encoder TrainConfig on the model at model_dir (checked dimensions)."""
    mods = st_folder.read_st_folder(model_dir)
    if cfg.pooling is not None:
        mods = mods.with_pooling(cfg.pooling)
    if cfg.normalize is not None:
        mods = mods.with_normalize(cfg.normalize)
    try:
        mods.output_dim(model_cfg.hidden_size)
    except ValueError as e:
        raise ValueError(f"{model_dir} with pooling={cfg.pooling!r}: {e}") from None
    return BiHead(mods, train_dense=cfg.dense == "train",
                  do_lower_case=bool(mods.transformer.get("do_lower_case", False)))


def encoder_dir(model_dir: Path) -> Path:
    """Where the encoder of an ST folder (or a plain HF folder) is."""
    return st_folder.read_st_folder(model_dir).encoder_dir


def build_score_head(chain: st_modules.CrossEncoderChain, model_cfg, num_labels: int) -> BiHead:
    """The head of a CrossEncoder folder whose scores are Pooling -> Dense ... -> "scores" modules
    (chain.kind "pooled"): the folder's Pooling as it is and its Dense modules trained (they are the
    score head; a new random head on the Transformer would drop them), exported as the same chain."""
    try:
        chain.pooled.output_dim(model_cfg.hidden_size)
    except ValueError as e:
        raise ValueError(f"{chain.model_dir}: {e}") from None
    if int(num_labels) != chain.num_labels:
        raise ValueError(f"num_labels={num_labels}, but the score head of {chain.model_dir} (its last Dense module) "
                         f"gives {chain.num_labels} score(s) per pair; set num_labels={chain.num_labels}")
    if chain.transformer.get("do_lower_case"):
        raise ValueError(f"{chain.encoder_dir}: do_lower_case in its Transformer config is not supported for "
                         "cross-encoders")
    st_cfg = chain.model_dir / "config_sentence_transformers.json"
    mods = dataclasses.replace(chain.pooled, transformer=chain.transformer,
                               model_config=read_json(st_cfg) if st_cfg.is_file() else {})
    return BiHead(mods, train_dense=True, do_lower_case=False, cross_encoder=True)


def load_with_head(cfg, model_dir: Path, *, allow_new_head: bool = True):
    """(pretrained, head) that cfg's task trains from model_dir: a bi-encoder's encoder and
    BiHead; a cross-encoder with its classification head (head None) or, for a CrossEncoder folder
    whose scores are Pooling -> Dense modules, its encoder and build_score_head's head (the
    config's num_labels = the chain's). allow_new_head: see hf.pretrained.load_pretrained."""
    if cfg.task != "cross_encoder":
        pt = load_pretrained(encoder_dir(model_dir), head=False, seed=cfg.seed)
        return pt, build_head(cfg, model_dir, pt.config)
    chain = st_modules.read_chain(model_dir)
    if chain.kind != "pooled":
        return load_pretrained(model_dir, head=True, num_labels=cfg.num_labels, seed=cfg.seed,
                               allow_new_head=allow_new_head), None
    pt = load_pretrained(chain.encoder_dir, head=False, seed=cfg.seed)
    head = build_score_head(chain, pt.config, cfg.num_labels)
    return dataclasses.replace(pt, config=pt.config.with_num_labels(chain.num_labels)), head
