"""What every family's HF record is made of: the record itself (Family, which hf/registry.py maps
model_type onto), weight rules, named transforms (each a load and a save direction) and small
helpers the tables share. Each family's own record is models/families/<name>/hf.py.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from ..models.config import EncoderConfig


class ConfigError(ValueError):
    """config.json cannot be represented exactly by our modules."""


def require(d: dict, key: str, family: str):
    if key not in d:
        raise ConfigError(f"config.json of a {family!r} model lacks the required attribute {key!r}")
    return d[key]


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
    # grouped-query k/v (decoders): [kv_heads*head_dim, embed] -> [embed, kv_heads, head_dim]
    "split_kv_heads": (lambda x, c: x.T.reshape(x.shape[1], c.num_kv_heads, c.head_dim),
                       lambda x, c: x.reshape(x.shape[0], -1).T),
    "split_kv_heads_bias": (lambda x, c: x.reshape(c.num_kv_heads, c.head_dim), lambda x, c: x.reshape(-1)),
    # attention output: [embed, heads*head_dim] -> [heads, head_dim, embed]
    "merge_heads": (lambda x, c: x.T.reshape(*_heads(c), x.shape[0]),
                    lambda x, c: x.reshape(-1, x.shape[-1]).T),
}


@dataclasses.dataclass(frozen=True)
class Rule:
    hf: str             # HF key, "{i}" = layer index; relative to the base prefix for encoder rules
    ours: str           # our param path, "/"-separated, "{i}" = layer index
    transform: str = "identity"


@dataclasses.dataclass(frozen=True)
class Fused:
    """One HF tensor that is several params here (ModernBERT's Wqkv -> query/key/value, Wi ->
    input/gate): on load it is cut into len(parts) equal chunks along its first axis (torch
    Linear's out axis), chunk n going through parts[n]'s transform to parts[n]'s path; on save
    the parts are turned back and concatenated in the same order, so the tensor round-trips."""
    hf: str
    parts: tuple[tuple[str, str], ...]   # (our path, transform) per chunk, in HF order; "{i}" = layer

    @property
    def ours(self) -> str:
        """The first part's path (what path-based filters look at; all parts go together)."""
        return self.parts[0][0]

    @property
    def paths(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.parts)


@dataclasses.dataclass(frozen=True)
class FamilyTable:
    prefix: str                 # base-model prefix inside task checkpoints ("bert" -> "bert.embeddings...")
    encoder: tuple[Rule | Fused, ...]   # keys relative to the prefix
    head: tuple[Rule | Fused, ...]      # top-level keys of the head ("{p}" = the prefix, if the checkpoint has one)
    ignored: tuple[str, ...]    # regexes of tensors that are harmless to drop, on purpose
    # (our param path with the layer filled in, cfg) -> whether this config has that param; for
    # tensors a config switch removes (ModernBERT: biases off, no norm before layer 0). None: all.
    needs: Callable[[str, EncoderConfig], bool] | None = None
    # HF key -> the key it is tied to (HF _tied_weights_keys, e.g. T5's encoder.embed_tokens.weight ->
    # shared.weight): a checkpoint that holds only the source is read in the key's place, as HF ties them.
    tied: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # (regex, replacement) on checkpoint keys before matching: another layout of the same tensors
    # that transformers renames on load (its conversion_mapping), e.g. Gemma 3's model.language_model.*
    # for language_model.model.*. Saves write the table's own names.
    renames: tuple[tuple[str, str], ...] = ()
    # the bare model's keys carry the prefix too (Gemma3Model keeps its text tower under it)
    bare_prefixed: bool = False


ConfigReader = Callable[[dict, str], tuple[dict, set]]


@dataclasses.dataclass(frozen=True)
class Family:
    """Everything xenc_jax knows about one HF model_type.

    config_cls: the models/ dataclass (it names the Flax encoder and head modules).
    read_config(d, model_type) -> (field values, the config.json keys it read); generic checks
      (activations, unknown keys, num_labels) are hf/configs.py's.
    table: the weight conversion table (load and save), with the tensors it drops on purpose.
    architecture: HF class-name stem, "{architecture}Model" / "{architecture}ForSequenceClassification".
    class_names: HF class names that do not follow the stem, by suffix (Gemma 3 text's causal LM is
      Gemma3ForCausalLM, its other classes Gemma3Text*); `class_name(suffix)` reads both.
    must_equal: config keys that change the math -> the values we implement.
    harmless: config keys of this family that never change the forward pass.
    tokenizer: the tokenizer class transformers' AutoTokenizer registers for this model_type
      (without "Fast"); a folder whose tokenizer_config.json names it is loaded with that class
      directly (hf/pretrained.load_tokenizer). "": AutoTokenizer, except the generic classes
      that pretrained.GENERIC_TOKENIZERS resolves as AutoTokenizer would.
    head_kinds: the heads this family's config can ask for (its config's `head_kind`, when it has
      one): "classifier" (ForSequenceClassification), "score" (a decoder's score Linear), "lm"
      (a causal LM's logits of the score tokens, hf/causal_score.py), "embeddings" (no head: the
      encoder's hidden states only, for bi-encoders; T5).
    reads_nested: see the field.
    tiny / base: HF config.json kwargs (the family folder's presets.py) of a tiny random model for
      tests and of the base-shaped one benchmarks build; a model is
      `transformers.AutoConfig.for_model(model_type, **{**tiny, **overrides})`. {}: none.
    """
    config_cls: type[EncoderConfig]
    read_config: ConfigReader
    table: FamilyTable
    architecture: str
    must_equal: Mapping[str, tuple] = dataclasses.field(default_factory=dict)
    harmless: frozenset[str] = frozenset()
    tokenizer: str = ""
    head_kinds: tuple[str, ...] = ("classifier",)
    tiny: Mapping = dataclasses.field(default_factory=dict)
    base: Mapping = dataclasses.field(default_factory=dict)
    class_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # read_config also takes read_nested= hf/configs.config_from_dict: its config.json holds another
    # model's config (Gemma 3's text_config), read with that family's checks. Passed in because a
    # family module cannot import hf/configs, which imports the registry, which imports the family.
    reads_nested: bool = False

    def class_name(self, suffix: str) -> str:
        """The HF class of this model_type with `suffix` ("Model", "ForCausalLM", ...), as
        transformers' Auto mappings name it and a saved config.json's `architectures` says."""
        return self.class_names.get(suffix, self.architecture + suffix)


def alias(family: Family, architecture: str, tokenizer: str | None = None, tiny: Mapping | None = None) -> Family:
    """The same model under another model_type and class names (e.g. CamemBERT = RoBERTa); its
    tokenizer class, when AutoTokenizer registers another one for it; its tiny test preset, when its
    tests vary something its base family's does not (else it reuses the base family's presets)."""
    return dataclasses.replace(family, architecture=architecture,
                               tokenizer=family.tokenizer if tokenizer is None else tokenizer,
                               tiny=family.tiny if tiny is None else tiny)


def linear(hf: str, ours: str, kernel="linear", bias="identity") -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}/kernel", kernel), Rule(f"{hf}.bias", f"{ours}/bias", bias)]


def norm(hf: str, ours: str) -> list[Rule]:
    return [Rule(f"{hf}.weight", f"{ours}/scale"), Rule(f"{hf}.bias", f"{ours}/bias")]


def attention(q, k, v, o) -> list[Rule]:
    at = "encoder/layer_{i}/attention"
    return (linear(q, f"{at}/query", "split_heads", "split_heads_bias")
            + linear(k, f"{at}/key", "split_heads", "split_heads_bias")
            + linear(v, f"{at}/value", "split_heads", "split_heads_bias")
            + linear(o, f"{at}/out", "merge_heads"))


EMB = "encoder/embeddings"
LAYER = "encoder/layer_{i}"
BUFFERS = (r"(.*\.)?embeddings\.position_ids", r"(.*\.)?embeddings\.token_type_ids")
