"""Which tokens a causal-LM reranker scores, with sentence-transformers 6.3's rules
(cross_encoder/model.py, cross_encoder/modules/logit_score.py):

- a folder with modules.json whose second module is a LogitScore: its config's true_token_id and
  false_token_id (mxbai-rerank-v2's "1"/"0"; false_token_id null: the true token alone);
- otherwise (a plain *ForCausalLM folder): the tokenizer's "yes" and "no" vocabulary entries.

The score is logit[true] - logit[false] (or logit[true]) at the last token; models/families/qwen/.
Stricter than ST on purpose: ST only checks that the lookup is not None, so a tokenizer with an
unknown token would silently score the unknown token's logit; that is an error here.
"""
from __future__ import annotations

from pathlib import Path

from .model_folder import is_st_cross_encoder, read_json, st_modules
from .st_transformer import read_transformer_file

LOGIT_SCORE_TYPE = "sentence_transformers.cross_encoder.modules.logit_score.LogitScore"


def logit_score_config(model_dir: Path) -> dict | None:
    """The LogitScore module's config of an ST folder, or None when it has none."""
    modules = Path(model_dir) / "modules.json"
    if not modules.is_file():
        return None
    for name, sub in st_modules(model_dir):
        if name == "LogitScore":
            path = Path(model_dir) / sub / "config.json"
            if not path.is_file():
                raise FileNotFoundError(f"{modules} lists a LogitScore module but {path} is missing")
            return read_json(path, "LogitScore config")
    return None


def _vocab_id(tokenizer, token: str) -> int | None:
    i = tokenizer.convert_tokens_to_ids(token)
    if i is None or (tokenizer.unk_token_id is not None and i == tokenizer.unk_token_id and token != tokenizer.unk_token):
        return None
    return int(i)


def score_token_ids(model_dir: Path, tokenizer) -> tuple[int, ...]:
    """(true, false) or (true,) token ids of a causal-LM reranker folder."""
    cfg = logit_score_config(model_dir)
    if cfg is not None:
        if cfg.get("true_token_id") is None:
            raise ValueError(f"the LogitScore config of {model_dir} has no true_token_id")
        false = cfg.get("false_token_id")
        return (int(cfg["true_token_id"]),) if false is None else (int(cfg["true_token_id"]), int(false))
    if tokenizer is None:
        raise ValueError(f"{model_dir} is a causal LM without a LogitScore module: its tokenizer is needed to "
                         "find the 'yes'/'no' tokens it is scored with")
    ids = {t: _vocab_id(tokenizer, t) for t in ("yes", "no")}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(
            f"{model_dir} is a causal LM ({'/'.join(missing)} not in its tokenizer's vocabulary): a causal-LM "
            "reranker is scored with logit['yes'] - logit['no'] by default. Give it a LogitScore module "
            "(modules.json + <dir>/config.json with true_token_id and false_token_id, as sentence-transformers "
            "saves it), or load a *ForSequenceClassification checkpoint instead")
    return ids["yes"], ids["no"]


def copy_st_files(src: Path, dst: Path) -> None:
    """Carry a CrossEncoder folder's ST files into a saved copy, so ST loads the copy with the
    same tokens, input format and prompts: config_sentence_transformers.json of a CrossEncoder
    (prompts), and for a CrossEncoder saved by ST (a sequence classifier, or a causal-LM reranker)
    its modules.json, LogitScore folder and the Transformer's sentence_bert_config.json (the
    modality: chat template or text). Nothing from a bi-encoder folder (its Pooling modules would
    make ST load the copy as something else), and nothing for a plain HF folder: ST's defaults
    then apply to both alike. (A Pooling -> Dense CrossEncoder is written whole by its own save.)"""
    import shutil
    src, dst = Path(src), Path(dst)
    st_cfg = src / "config_sentence_transformers.json"
    if st_cfg.is_file() and read_json(st_cfg).get("model_type") == "CrossEncoder":
        shutil.copy2(st_cfg, dst / st_cfg.name)
    if not (src / "modules.json").is_file() or not is_st_cross_encoder(src):
        return
    # The saved weights and tokenizer are in dst itself: the Transformer module moves to the root
    # (a source keeping it in a subfolder would point ST at the source's weights).
    import json
    entries = read_json(src / "modules.json", "module list", expect=list)
    for entry, (name, sub) in zip(entries, st_modules(src)):
        if name == "Transformer":
            entry["path"] = ""
            config = read_transformer_file(src / sub)
            if config is not None:
                (dst / "sentence_bert_config.json").write_text(json.dumps(config, indent=2) + "\n")
        elif sub and (src / sub).is_dir() and not (dst / sub).exists():
            shutil.copytree(src / sub, dst / sub)
    (dst / "modules.json").write_text(json.dumps(entries, indent=2) + "\n")
