"""What a model folder must hold before anything is scored with it, and the one reader of its JSON files.

Why each check exists (each was a silent wrong result, issue 29):
- transformers 5 builds an empty tokenizer (5 ids) from a folder without tokenizer files, so every
  word became [UNK] and `xenc score` printed scores with exit code 0;
- a tokenizer with more tokens than the word-embedding table makes ids that have no embedding row
  (JAX's gather clamps them to the last row without a word);
- a sentence-transformers CrossEncoder folder whose modules.json computes its scores with modules
  after the Transformer (Pooling -> Dense "scores", the ettin-reranker layout) has no HF
  classification head, so loading it here would have scored with a random head;
- a damaged JSON file was reported as `Expecting property name ...: line 1 column 2`, naming no file.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..models.config import EncoderConfig


class ModelFolderError(ValueError):
    """A model folder that cannot be used as it is; the message names the file and the way on."""


def read_json(path: str | Path, what: str | None = None, *, expect: type | tuple = dict,
              error: type[Exception] = ModelFolderError):
    """The JSON value in `path`, or `error` naming the file, the line and the column of the damage.
    expect: the type(s) the top-level value must have (None: any)."""
    path = Path(path)
    label = f"{path} ({what})" if what else str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:  # e.g. a module folder that modules.json lists but that was not copied
        raise FileNotFoundError(f"{label} does not exist: the model folder is incomplete (a file of the model, or "
                                "the folder of a module its modules.json lists, is missing); copy the whole model "
                                "folder again") from None
    except UnicodeDecodeError as e:
        raise error(f"{label} is not UTF-8 text (byte {e.start}: {e.reason})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{label} is not valid JSON (line {e.lineno} column {e.colno}: {e.msg})") from None
    if expect is not None and not isinstance(data, expect):
        names = " or ".join({dict: "object", list: "list"}.get(t, t.__name__)
                            for t in (expect if isinstance(expect, tuple) else (expect,)))
        raise error(f"{label} must hold a JSON {names}, found {type(data).__name__}")
    return data


# Files that carry a tokenizer's vocabulary: a fast tokenizer (tokenizer.json), WordPiece
# (vocab.txt), byte-level BPE (vocab.json + merges.txt), SentencePiece (*.model: spiece.model,
# sentencepiece.bpe.model, spm.model, tokenizer.model) or tiktoken. tokenizer_config.json and
# special_tokens_map.json alone hold no vocabulary.
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")
VOCAB_SUFFIXES = (".model", ".tiktoken")
MIN_TOKENS = 100  # fewer tokens than this, for a table at least twice as large: an empty tokenizer


def check_tokenizer_files(model_dir: str | Path) -> None:
    """A tokenizer vocabulary file is in the folder (else transformers would build an empty tokenizer)."""
    model_dir = Path(model_dir)
    names = sorted(p.name for p in model_dir.iterdir() if p.is_file())
    if any(n in VOCAB_FILES or n.endswith(VOCAB_SUFFIXES) for n in names):
        return
    raise ModelFolderError(
        f"{model_dir} has no tokenizer files (none of {', '.join(VOCAB_FILES)}, a SentencePiece *.model; "
        f"found {', '.join(names) or 'nothing'}): copy the tokenizer files of the model these weights "
        "come from into it (tokenizer.save_pretrained(dir) writes them)")


def check_tokenizer_vocab(tokenizer, cfg: EncoderConfig, model_dir: str | Path) -> None:
    """The tokenizer fits the model's word-embedding table: no id without a row, and not empty."""
    n, rows = len(tokenizer), int(cfg.vocab_size)
    if n > rows:
        raise ModelFolderError(
            f"{model_dir}: its tokenizer has {n} tokens but the model's word embedding has {rows} rows "
            f"(config.json vocab_size), so ids {rows}..{n - 1} have no embedding: the tokenizer files do not "
            "belong to these weights; copy the tokenizer of the model they come from")
    if n < MIN_TOKENS and 2 * n <= rows:
        raise ModelFolderError(
            f"{model_dir}: its tokenizer has only {n} tokens ({', '.join(map(str, list(tokenizer.get_vocab())[:8]))}) "
            f"for a word embedding of {rows} rows: the folder's tokenizer vocabulary is missing or empty "
            f"(expected one of {', '.join(VOCAB_FILES)} or a SentencePiece *.model with the model's vocabulary); "
            "copy the tokenizer files of the model these weights come from")


def st_modules(model_dir: str | Path) -> list[tuple[str, str]] | None:
    """(class name, path) of each module in modules.json, or None when the folder has none."""
    path = Path(model_dir) / "modules.json"
    if not path.is_file():
        return None
    entries = read_json(path, "module list", expect=list)
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("type"), str):
            raise ModelFolderError(f"{path}: entry {i} is not a module object with a 'type'")
        out.append((e["type"].rsplit(".", 1)[-1], str(e.get("path") or "")))
    return out


def is_st_cross_encoder(model_dir: str | Path) -> bool:
    """Whether a sentence-transformers folder is a CrossEncoder's (config_sentence_transformers.json
    says so, or a module lives in ST's cross_encoder package) rather than a bi-encoder's."""
    model_dir = Path(model_dir)
    cfg_path = model_dir / "config_sentence_transformers.json"
    if cfg_path.is_file() and read_json(cfg_path).get("model_type") == "CrossEncoder":
        return True
    entries = read_json(model_dir / "modules.json", "module list", expect=list)
    return any(isinstance(e, dict) and str(e.get("type", "")).startswith("sentence_transformers.cross_encoder.")
               for e in entries)


# After the Transformer, the only CrossEncoder module computed here: a causal LM's LogitScore
# (hf/causal_score.py). A sequence-classification Transformer alone is a plain HF model.
CE_MODULES_AFTER_TRANSFORMER = ("LogitScore",)


def check_cross_encoder_modules(model_dir: str | Path) -> None:
    """load_pretrained(head=True) (one model with a classification head on the Transformer) of a
    sentence-transformers CrossEncoder folder whose modules.json computes the scores with other
    modules (Pooling -> Dense ...) is refused, naming the module: loading only its Transformer would
    score or train a random head. CrossEncoder and training (train/bi_head.load_with_head) compute
    those chains instead (hf/st_modules.py). A bi-encoder folder passes (it has no head; the caller
    decides)."""
    modules = st_modules(model_dir)
    if not modules or not is_st_cross_encoder(model_dir):
        return
    where = Path(model_dir) / "modules.json"
    if modules[0][0] != "Transformer":
        raise ModelFolderError(f"{where}: the first module is {modules[0][0]}, not a Transformer; "
                               "xenc_jax runs CrossEncoder folders that start with their Transformer")
    for name, sub in modules[1:]:
        if name not in CE_MODULES_AFTER_TRANSFORMER:
            raise ModelFolderError(
                f"{where} lists a {name} module ({sub or '.'}) after the Transformer: this sentence-transformers "
                f"CrossEncoder computes its scores with modules after its Transformer (modules found: "
                f"{', '.join(n for n, _ in modules)}). load_pretrained(head=True) builds one model with its head on "
                f"the Transformer (after it only {', '.join(CE_MODULES_AFTER_TRANSFORMER)}), which would start from a "
                "random head and drop the trained one, so it is refused; CrossEncoder scores the folder, and "
                "`xenc train` / `xenc eval` train and evaluate it with its own modules")


class MissingHeadError(ModelFolderError):
    """A cross-encoder asked of a folder without a trained classification head."""


def missing_head_error(model_dir: str | Path, missing) -> MissingHeadError:
    """The error for scoring a folder that has no trained classification head, with the ways on."""
    modules = st_modules(model_dir)
    what = (f"it is a sentence-transformers bi-encoder folder (modules.json: {', '.join(n for n, _ in modules)}); "
            if modules and not is_st_cross_encoder(model_dir) else "")
    return MissingHeadError(
        f"{model_dir} has no trained classification head ({', '.join(missing)} missing from its weights); "
        f"{what}scoring with a randomly initialised head gives meaningless scores. To go on: train a head on "
        "it with `xenc train`, embed with it as a bi-encoder (`xenc encode` / `xenc search`, BiEncoder), or "
        "pass allow_new_head=True (`xenc score` / `rank` / `tune`: --allow-new-head) to initialise a new head, e.g. "
        "to train it")
