"""sentence-transformers model folders: read and write the modules after the Transformer.

An ST bi-encoder folder lists its modules in modules.json: Transformer (the HF encoder, plus
sentence_bert_config.json: max_seq_length, do_lower_case), Pooling (1_Pooling/config.json),
then any Dense (config.json + linear.weight [out, in], linear.bias), Normalize and Dropout.
`read_st_folder` turns that into a `SentenceModules` record, `write_st_folder` writes one back
in ST 6.x's format. BiEncoder (loading, save) and bi-encoder training (setup, export) both go
through these two functions, so what is trained is what is exported and what is loaded.
The math of the modules is models/pooling.py's `sentence_head`.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ..models import pooling as P
from ..models.pooling import DenseSpec
from . import model_folder
from .checkpoint_files import read_checkpoint, write_safetensors
from .st_transformer import read_transformer_file

# modules.json "type" -> our module kind. Both the legacy short paths and ST 6.2's full paths.
MODULE_KINDS = {"Transformer": "transformer", "Pooling": "pooling", "Dense": "dense",
                "Normalize": "normalize", "Dropout": "dropout"}
ST_TYPES = {"transformer": "sentence_transformers.base.modules.transformer.Transformer",
            "pooling": "sentence_transformers.sentence_transformer.modules.pooling.Pooling",
            "dense": "sentence_transformers.base.modules.dense.Dense",
            "normalize": "sentence_transformers.base.modules.normalize.Normalize"}

# A CrossEncoder folder keeps its activation in config.json: "sentence_transformers.activation_fn"
# (ST >= 4) or "sbert_ce_default_activation_function" (older), as a torch class path.
CE_ACTIVATIONS = {"torch.nn.modules.activation.Sigmoid": "sigmoid", "torch.nn.modules.linear.Identity": "identity",
                  "torch.nn.modules.activation.Tanh": "tanh"}
CE_ACTIVATION_PATHS = {v: k for k, v in CE_ACTIVATIONS.items()}


# ----------------------------------------------------------------------------- ST's token limits

def default_max_length(tokenizer, config) -> int:
    """ST's max_length for a CrossEncoder: the tokenizer's model_max_length, capped by the position table."""
    return min(int(tokenizer.model_max_length), config.max_position_embeddings - config.position_offset)


def default_max_seq_length(st_cfg: dict, tokenizer, config) -> int:
    """ST's max_seq_length: sentence_bert_config.json's, else the tokenizer's model_max_length
    capped by the position table."""
    limit = config.max_position_embeddings - config.position_offset
    n = st_cfg.get("max_seq_length") or min(int(tokenizer.model_max_length), config.max_position_embeddings)
    return min(int(n), limit)


def stored_ce_activation(raw_config: dict) -> str | None:
    """The torch class path of the activation a CrossEncoder's config.json stores, if any."""
    return ((raw_config.get("sentence_transformers") or {}).get("activation_fn")
            or raw_config.get("sbert_ce_default_activation_function"))


def with_ce_activation(raw_config: dict, name: str) -> dict:
    """config.json with activation `name` (sigmoid / identity / tanh) stored the way ST 6 reads it."""
    return {**raw_config, "sentence_transformers": {**(raw_config.get("sentence_transformers") or {}),
                                                    "activation_fn": CE_ACTIVATION_PATHS[name]}}


@dataclasses.dataclass(frozen=True)
class SentenceModules:
    """What an ST folder computes after its encoder (a plain HF folder: ST's default pooling, no ops).

    ops: ("dense", DenseSpec) | ("normalize", None) in order (Dropout is identity at inference
    and dropped); dense_params: one {"kernel" [out, in], "bias"?, "residual"?} float32 numpy
    dict per Dense op. transformer: sentence_bert_config.json; model_config:
    config_sentence_transformers.json as stored (None when absent).
    """
    encoder_dir: Path
    pooling_modes: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    ops: tuple = ()
    dense_params: tuple = ()
    transformer: dict = dataclasses.field(default_factory=dict)
    model_config: dict | None = None
    pooling_dim: int | None = None
    is_st: bool = False
    # (module_input_name, module_output_name) per op, as written; () = "sentence_embedding" for all
    # (a cross-encoder's last Dense writes "scores": hf/st_modules.py)
    io_names: tuple = ()

    @property
    def normalize(self) -> bool:
        return any(kind == "normalize" for kind, _ in self.ops)

    def output_dim(self, hidden_size: int) -> int:
        """The embedding size; checks Pooling's dimension and every Dense in_features on the way."""
        if self.pooling_dim is not None and int(self.pooling_dim) != hidden_size:
            raise ValueError(f"Pooling embedding_dimension {self.pooling_dim} differs from the encoder's hidden size "
                             f"{hidden_size}")
        dim = len(self.pooling_modes) * hidden_size
        for kind, spec in self.ops:
            if kind == "dense":
                if spec.in_features != dim:
                    raise ValueError(f"Dense in_features {spec.in_features} != the incoming dimension {dim} "
                                     f"(pooling {self.pooling_modes} of hidden size {hidden_size})")
                dim = spec.out_features
        return dim

    def with_pooling(self, modes, include_prompt: bool | None = None) -> "SentenceModules":
        return dataclasses.replace(self, pooling_modes=P.check_modes(modes),
                                   include_prompt=self.include_prompt if include_prompt is None else include_prompt)

    def with_normalize(self, normalize: bool) -> "SentenceModules":
        """normalize=True: one Normalize at the end (kept if there); False: every Normalize dropped."""
        if not normalize:
            ops = tuple(op for op in self.ops if op[0] != "normalize")
        elif self.ops and self.ops[-1][0] == "normalize":
            ops = self.ops
        else:
            ops = self.ops + (("normalize", None),)
        return dataclasses.replace(self, ops=ops)

    def with_dense_params(self, dense_params) -> "SentenceModules":
        dense_params = tuple(dense_params)
        n = sum(kind == "dense" for kind, _ in self.ops)
        if len(dense_params) != n:
            raise ValueError(f"{len(dense_params)} Dense param sets for {n} Dense modules")
        return dataclasses.replace(self, dense_params=tuple(
            {k: np.asarray(v, np.float32) for k, v in p.items()} for p in dense_params))


def read_json(path: Path, what: str, expect: type = dict):
    """model_folder.read_json: a damaged file is named with the line and column."""
    return model_folder.read_json(path, what, expect=expect)


def module_kind(entry, where: str) -> str:
    typ = entry.get("type") if isinstance(entry, dict) else None
    kind = MODULE_KINDS.get(str(typ).rsplit(".", 1)[-1]) if isinstance(typ, str) else None
    if kind is None or not typ.startswith("sentence_transformers."):
        raise ValueError(f"{where}: unsupported module type {typ!r}; BiEncoder handles sentence-transformers' "
                         f"{sorted(MODULE_KINDS)} modules (a model with other modules cannot be run exactly here)")
    return kind


def pooling_modes(cfg: dict, where: Path) -> tuple[tuple[str, ...], bool]:
    if "pooling_mode" in cfg:
        modes = cfg["pooling_mode"]
    else:
        modes = tuple(mode for key, mode in P.LEGACY_KEYS.items() if cfg.get(key)) or ("mean",)
    try:
        modes = P.check_modes(modes)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return modes, bool(cfg.get("include_prompt", True))


def read_dense(folder: Path) -> tuple[DenseSpec, dict]:
    """A bi-encoder's Dense module: reads and writes the sentence embedding."""
    spec, params, names = read_dense_io(folder)
    for key, name in zip(("module_input_name", "module_output_name"), names):
        if name != "sentence_embedding":
            raise ValueError(f"{folder}: Dense {key}={name!r} is not supported (only 'sentence_embedding')")
    return spec, params


def read_dense_io(folder: Path) -> tuple[DenseSpec, dict, tuple[str, str]]:
    """A Dense module: (spec, {"kernel", "bias"?, "residual"?}, (module_input_name,
    module_output_name)); ST's defaults: input "sentence_embedding", output = input."""
    cfg = read_json(folder / "config.json", "Dense config")
    act = cfg.get("activation_function", "torch.nn.modules.activation.Tanh")
    if act not in P.DENSE_ACTIVATIONS:
        raise ValueError(f"{folder / 'config.json'}: Dense activation_function {act!r} is not supported; "
                         f"supported: {sorted(P.DENSE_ACTIVATIONS)}")
    name_in = cfg.get("module_input_name") or "sentence_embedding"
    name_out = cfg.get("module_output_name") or name_in
    spec = DenseSpec(int(cfg["in_features"]), int(cfg["out_features"]), bool(cfg.get("bias", True)), act,
                     bool(cfg.get("use_residual", False)))
    tensors = read_checkpoint(folder)
    want = {"linear.weight": (spec.out_features, spec.in_features)}
    if spec.bias:
        want["linear.bias"] = (spec.out_features,)
    if spec.use_residual and spec.in_features != spec.out_features:
        want["residual.weight"] = (spec.out_features, spec.in_features)
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if got != want:
        raise ValueError(f"{folder}: Dense weights {got} do not match its config (expected {want})")
    params = {"kernel": tensors["linear.weight"], "bias": tensors.get("linear.bias"),
              "residual": tensors.get("residual.weight")}
    return spec, {k: np.asarray(v, np.float32) for k, v in params.items() if v is not None}, (name_in, name_out)


def read_transformer_config(folder: Path) -> dict:
    """A bi-encoder's Transformer config (feature extraction writing token embeddings), {} if none."""
    cfg = read_transformer_file(folder)
    if cfg is None:
        return {}
    task = cfg.get("transformer_task", "feature-extraction")
    if task != "feature-extraction" or cfg.get("module_output_name", "token_embeddings") != "token_embeddings":
        raise ValueError(f"{folder}: its Transformer config's transformer_task {task!r} / module_output_name "
                         f"{cfg.get('module_output_name')!r} not supported (feature-extraction only)")
    return cfg


def read_model_config(path: Path, score_functions) -> dict:
    """config_sentence_transformers.json, checked: a SentenceTransformer with a known similarity."""
    cfg = read_json(path, "model config")
    if cfg.get("model_type", "SentenceTransformer") != "SentenceTransformer":
        raise ValueError(f"{path}: model_type {cfg['model_type']!r} is not a SentenceTransformer (bi-encoder)")
    name = cfg.get("similarity_fn_name") or "cosine"
    if name not in score_functions:
        raise ValueError(f"{path}: unknown similarity_fn_name {name!r}; expected one of {score_functions}")
    return cfg


def default_pooling_modes(model_dir: Path) -> tuple[str, ...]:
    """ST's pooling for a plain HF folder (SentenceTransformer._load_default_modules): lasttoken
    for a model built for causal LM (architectures[0] ends with "ForCausalLM" and config.json's
    is_causal, when present, is truthy), else mean. A bare Qwen3Model folder thus gets mean."""
    try:
        cfg = json.loads((Path(model_dir) / "config.json").read_text())
    except (OSError, ValueError):
        return ("mean",)  # load_pretrained reports a missing / broken config.json
    archs = cfg.get("architectures") if isinstance(cfg, dict) else None
    causal = (isinstance(archs, list) and archs and isinstance(archs[0], str) and archs[0].endswith("ForCausalLM")
              and cfg.get("is_causal", True))
    return ("lasttoken",) if causal else ("mean",)


def read_st_folder(model_dir: Path, score_functions=("cosine", "dot", "euclidean", "manhattan")) -> SentenceModules:
    """The modules of an ST folder (modules.json), or ST's defaults for a plain HF folder."""
    model_dir = Path(model_dir)
    if not (model_dir / "modules.json").is_file():
        return SentenceModules(encoder_dir=model_dir, pooling_modes=default_pooling_modes(model_dir))
    entries = read_json(model_dir / "modules.json", "module list", expect=list)
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{model_dir / 'modules.json'} must be a non-empty JSON list of modules")
    kinds = [module_kind(e, f"{model_dir / 'modules.json'} entry {i}") for i, e in enumerate(entries)]
    if kinds[0] != "transformer" or kinds.count("transformer") != 1 or kinds.count("pooling") != 1 \
            or kinds.index("pooling") != 1:
        raise ValueError(f"{model_dir / 'modules.json'}: expected Transformer, Pooling, then Dense/Normalize "
                         f"modules; found {kinds}")
    folders = [model_dir / (e.get("path") or "") for e in entries]
    pool_cfg = read_json(folders[1] / "config.json", "Pooling config")
    modes, include_prompt = pooling_modes(pool_cfg, folders[1] / "config.json")
    ops, dense_params = [], []
    for kind, folder in zip(kinds[2:], folders[2:]):
        if kind == "dense":
            spec, prm = read_dense(folder)
            ops.append(("dense", spec))
            dense_params.append(prm)
        elif kind == "normalize":
            ops.append(("normalize", None))
        # dropout: identity at inference
    model_cfg = None
    if (model_dir / "config_sentence_transformers.json").is_file():
        model_cfg = read_model_config(model_dir / "config_sentence_transformers.json", score_functions)
    dim = pool_cfg.get("embedding_dimension", pool_cfg.get("word_embedding_dimension"))
    return SentenceModules(encoder_dir=folders[0], pooling_modes=modes, include_prompt=include_prompt,
                           ops=tuple(ops), dense_params=tuple(dense_params),
                           transformer=read_transformer_config(folders[0]), model_config=model_cfg,
                           pooling_dim=None if dim is None else int(dim), is_st=True)


def write_st_folder(path: Path, mods: SentenceModules, *, hidden_size: int, max_seq_length: int,
                    do_lower_case: bool, model_config: dict | None = None,
                    transformer_config: dict | None = None) -> Path:
    """Write everything of an ST folder but the encoder (config.json, weights, tokenizer, which
    save_pretrained writes in `path`): sentence_bert_config.json (max_seq_length, do_lower_case
    and `transformer_config`: task, modality_config, module_output_name), 1_Pooling, one folder per
    Dense / Normalize op (Dense weights in ST's layout, mods.io_names' feature names),
    modules.json and config_sentence_transformers.json (`model_config`; a SentenceTransformer's
    default: cosine similarity; a CrossEncoder's model_type: "CrossEncoder")."""
    path = Path(path)
    mods.output_dim(hidden_size)  # the dimensions chain
    (path / "sentence_bert_config.json").write_text(json.dumps(
        {"max_seq_length": int(max_seq_length), "do_lower_case": bool(do_lower_case), **(transformer_config or {})},
        indent=2) + "\n")
    modules = [{"idx": 0, "name": "0", "path": "", "type": ST_TYPES["transformer"]}]
    pool_dir = path / "1_Pooling"
    pool_dir.mkdir(exist_ok=True)
    modes = mods.pooling_modes[0] if len(mods.pooling_modes) == 1 else list(mods.pooling_modes)
    (pool_dir / "config.json").write_text(json.dumps({
        "embedding_dimension": hidden_size, "pooling_mode": modes,
        "include_prompt": mods.include_prompt}, indent=2) + "\n")
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": ST_TYPES["pooling"]})
    dense = iter(mods.dense_params)
    io_names = mods.io_names or [("sentence_embedding", "sentence_embedding")] * len(mods.ops)
    for idx, (kind, spec), (name_in, name_out) in zip(range(2, len(mods.ops) + 2), mods.ops, io_names):
        folder = path / f"{idx}_{kind.capitalize()}"
        folder.mkdir(exist_ok=True)
        if kind == "dense":
            prm = next(dense)
            conf = {"in_features": spec.in_features, "out_features": spec.out_features, "bias": spec.bias,
                    "activation_function": spec.activation, "module_input_name": name_in,
                    "module_output_name": name_out}
            if spec.use_residual:
                conf["use_residual"] = True
            tensors = {"linear.weight": prm["kernel"]}
            if "bias" in prm:
                tensors["linear.bias"] = prm["bias"]
            if "residual" in prm:
                tensors["residual.weight"] = prm["residual"]
            write_safetensors({k: np.asarray(v, np.float32) for k, v in tensors.items()}, folder / "model.safetensors")
        else:
            conf = {"module_input_name": name_in, "module_output_name": name_out}
        (folder / "config.json").write_text(json.dumps(conf, indent=2) + "\n")
        modules.append({"idx": idx, "name": str(idx), "path": folder.name, "type": ST_TYPES[kind]})
    (path / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    model_config = dict(model_config or {})
    model_config.setdefault("model_type", "SentenceTransformer")
    if model_config["model_type"] == "SentenceTransformer":
        model_config.setdefault("similarity_fn_name", "cosine")
    (path / "config_sentence_transformers.json").write_text(json.dumps(model_config, indent=2) + "\n")
    return path
