"""sentence-transformers 6.3's Transformer module as a folder stores it: its config file and the
modality it takes (base/modules/transformer.py: load_config, infer_modalities; base/modality.py:
InputFormatter._infer_format). ST 6.3 is the version whose semantics we follow where versions
differ (docs/model_families.md).

Which modality the Transformer takes (`input_format`):
- an ST folder (modules.json): the Transformer's sentence_bert_config.json `modality_config`;
  "message" among its keys -> messages through the chat template; no modality_config at all ->
  text only (ST reads such a folder as saved before modalities existed);
- a plain HF folder (no modules.json): inferred, messages whenever the tokenizer has a chat template.
The message format ("flat": content is the string; "structured": [{"type": "text", "text": ...}])
is the saved `format`, else inferred from the template text as ST does.
chat_format.py turns texts and pairs into ids accordingly.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from .model_folder import ModelFolderError, read_json, st_modules

# ST's test for a "structured" template (content as a list of typed parts) vs "flat" (a string)
_STRUCTURED_MARKS = ("content[0]", ".type", "'type'", '"type"', "item.type", "message.content[")
# ST's per-model_type overrides of that test (modality.KNOWN_MODEL_TYPES_MESSAGE_FORMATS)
KNOWN_MESSAGE_FORMATS = {"apertus": "flat", "deepseek_v3": "flat", "gpt_oss": "flat", "minicpm3": "flat",
                         "seed_oss": "flat"}
# The Transformer module's config file names ST tries, in its order.
TRANSFORMER_CONFIGS = ("sentence_bert_config.json", "sentence_roberta_config.json", "sentence_distilbert_config.json",
                       "sentence_camembert_config.json", "sentence_albert_config.json",
                       "sentence_xlm-roberta_config.json", "sentence_xlnet_config.json")
MODALITIES = ("text", "image", "audio", "video", "message")
# transformer_task -> (the HF output its modalities read, the feature the module writes): ST's defaults
TASK_OUTPUTS = {"feature-extraction": ("last_hidden_state", "token_embeddings"),
                "sequence-classification": ("logits", "scores"),
                "text-generation": ("logits", "causal_logits")}


@dataclasses.dataclass(frozen=True)
class InputFormat:
    """How the Transformer module takes its inputs: messages through the chat template, or text."""
    message: bool
    message_format: str = "structured"   # "flat" | "structured" (used with message=True)

    def modality_config(self, task: str) -> dict:
        """sentence_bert_config.json's modality_config as ST 6.3 writes it for `task`."""
        out = {"method": "forward", "method_output_name": TASK_OUTPUTS[task][0]}
        cfg = {"text": dict(out)}
        if self.message:
            cfg["message"] = {**out, "format": self.message_format}
        return cfg

    def transformer_config(self, task: str) -> dict:
        """The keys of sentence_bert_config.json that say what the module computes and takes."""
        return {"transformer_task": task, "modality_config": self.modality_config(task),
                "module_output_name": TASK_OUTPUTS[task][1]}


def read_transformer_file(folder: Path) -> dict | None:
    """The Transformer module's config in `folder` (the first of ST's file names), or None."""
    for name in TRANSFORMER_CONFIGS:
        if (Path(folder) / name).is_file():
            return read_json(Path(folder) / name, "Transformer config")
    return None


def transformer_folder_config(model_dir: Path) -> tuple[dict, bool]:
    """(the Transformer module's config, whether the folder is an ST folder (modules.json)).
    A plain HF folder: ({}, False); ST reads no sentence_bert_config.json without modules.json."""
    model_dir = Path(model_dir)
    modules = st_modules(model_dir)
    if not modules:
        return {}, False
    sub = next((path for name, path in modules if name == "Transformer"), "")
    return read_transformer_file(model_dir / sub) or {}, True


def _template(tokenizer):
    return getattr(tokenizer, "chat_template", None)


def infer_message_format(tokenizer, model_type: str | None) -> str:
    """ST's InputFormatter._infer_format: a known model type's, else "structured" when the
    template indexes typed content parts (or is not one string), else "flat"."""
    if model_type in KNOWN_MESSAGE_FORMATS:
        return KNOWN_MESSAGE_FORMATS[model_type]
    template = _template(tokenizer)
    if not isinstance(template, str) or not template:
        return "structured"
    return "structured" if any(m in template for m in _STRUCTURED_MARKS) else "flat"


def input_format(transformer_cfg: dict, tokenizer, model_type: str | None, *, saved: bool,
                 where: str = "this model") -> InputFormat:
    """The modality ST 6.3 feeds this Transformer (module docstring). `saved`: the folder has
    modules.json, so modality_config is read (text only when absent), never inferred."""
    if not saved:
        if _template(tokenizer) is None:
            return InputFormat(False)
        return InputFormat(True, infer_message_format(tokenizer, model_type))
    modality = transformer_cfg.get("modality_config")
    if modality is None:
        return InputFormat(False)
    if not isinstance(modality, dict):
        raise ModelFolderError(f"{where}: modality_config must be a JSON object, found {type(modality).__name__}")
    known = {k for k in modality if all(part in MODALITIES for part in str(k).split("+"))}
    if "message" not in known and "text" not in known:
        raise ModelFolderError(f"{where}: modality_config {sorted(modality)} takes neither 'text' nor 'message' "
                               "inputs; xenc_jax embeds and scores text")
    if "message" not in known:
        return InputFormat(False)
    entry = modality["message"]
    fmt = entry.get("format", "auto") if isinstance(entry, dict) else "auto"
    if fmt not in ("auto", "flat", "structured"):
        raise ModelFolderError(f"{where}: modality_config message format {fmt!r} is not one of auto, flat, structured")
    if _template(tokenizer) is None:
        raise ModelFolderError(f"{where}: its modality_config takes 'message' inputs, which go through the "
                               "tokenizer's chat template, but the tokenizer has none; add the model's "
                               "chat_template.jinja (or tokenizer_config.json's chat_template) to the folder")
    return InputFormat(True, infer_message_format(tokenizer, model_type) if fmt == "auto" else fmt)
