"""Read and write checkpoint tensor files: safetensors (single or sharded), and pickle `.bin`
only through torch's `weights_only=True` loader (never plain pickle)."""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .model_folder import ModelFolderError, read_json


def damaged_weights(path: Path, error: Exception) -> ModelFolderError:
    """A weights file that is missing or cannot be read, named with the way on (safetensors' own
    SafetensorError, e.g. "MetadataIncompleteBuffer" for a file cut short, names no file and is
    no ValueError, so the CLI printed a traceback)."""
    if not path.is_file():
        return ModelFolderError(f"{path} is missing: the folder's checkpoint index lists it as a shard of the weights; "
                                "copy every shard of the model into the folder")
    reason = " ".join(str(error).split())[:200]
    return ModelFolderError(
        f"{path} ({path.stat().st_size} bytes) cannot be read ({type(error).__name__}: {reason}): the file is "
        "damaged or cut short (an interrupted download or copy?); copy it again from the model's source")


@contextlib.contextmanager
def _safe_open(path: Path, framework: str):
    """safetensors' safe_open, its errors (on open or on a tensor read) named by damaged_weights."""
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework=framework) as f:
            yield f
    except (SafetensorError, OSError) as e:
        raise damaged_weights(path, e) from None


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with _safe_open(path, "numpy") as f:
        keys = list(f.keys())
        try:
            for k in keys:
                out[k] = f.get_tensor(k)
            return out
        except TypeError:
            pass  # numpy has no bfloat16; read through jax (ml_dtypes) instead
    with _safe_open(path, "flax") as f:
        return {k: np.asarray(f.get_tensor(k)) for k in f.keys()}


class LazyTensors(Mapping):
    """The tensors of (sharded) safetensors files, read one at a time on access (memory-mapped
    files: a tensor costs host memory only while its caller holds it). Loading into a mesh goes
    through this, so the host never holds the whole checkpoint."""

    def __init__(self, files: list[Path]):
        self._where: dict[str, Path] = {}
        for path in files:
            with _safe_open(path, "numpy") as f:
                self._where.update({k: path for k in f.keys()})

    def __getitem__(self, key: str) -> np.ndarray:
        path = self._where[key]
        try:
            with _safe_open(path, "numpy") as f:
                return f.get_tensor(key)
        except TypeError:   # numpy has no bfloat16: through jax (ml_dtypes)
            with _safe_open(path, "flax") as f:
                return np.asarray(f.get_tensor(key))

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def lazy_checkpoint(model_dir: Path) -> Mapping[str, np.ndarray]:
    """Like read_checkpoint, but safetensors (single or sharded) are read tensor by tensor on
    access; a pickle .bin checkpoint (torch reads it whole anyway) is read at once."""
    model_dir = Path(model_dir)
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    if single.is_file():
        return LazyTensors([single])
    if index.is_file():
        return LazyTensors([model_dir / s for s in sorted(set(_weight_map(index).values()))])
    return read_checkpoint(model_dir)


def _weight_map(index: Path) -> dict[str, str]:
    """tensor name -> shard file of a sharded checkpoint's index; a damaged index is named."""
    weight_map = read_json(index, "checkpoint index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ModelFolderError(f"{index} has no 'weight_map' of tensor name -> shard file")
    return weight_map


def _read_torch_bin(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(f"{path.name} is a PyTorch pickle checkpoint; reading it safely needs torch "
                          "(weights_only=True). Install torch, or convert the model to safetensors.") from e
    if not path.is_file():
        raise damaged_weights(path, FileNotFoundError(path))
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
        first = (str(e).strip().splitlines() or [""])[0]
        raise ModelFolderError(
            f"{path} cannot be read as a PyTorch checkpoint with weights_only=True ({type(e).__name__}: "
            f"{first[:200]}): it is damaged or cut short, or holds objects other than tensors (never loaded "
            "with plain pickle); copy it again, or convert the model to safetensors") from None
    return {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in state.items()}


def read_checkpoint(model_dir: Path) -> dict[str, np.ndarray]:
    """All tensors of the model in `model_dir`, preferring safetensors."""
    model_dir = Path(model_dir)
    single, index = model_dir / "model.safetensors", model_dir / "model.safetensors.index.json"
    if single.is_file():
        return _read_safetensors(single)
    for idx, reader in ((index, _read_safetensors), (model_dir / "pytorch_model.bin.index.json", _read_torch_bin)):
        if idx.is_file():
            out = {}
            for shard in sorted(set(_weight_map(idx).values())):
                out.update(reader(model_dir / shard))
            return out
    if (model_dir / "pytorch_model.bin").is_file():
        return _read_torch_bin(model_dir / "pytorch_model.bin")
    found = sorted(p.name for p in model_dir.iterdir())
    raise FileNotFoundError(
        f"no weights in {model_dir}: expected model.safetensors, model.safetensors.index.json or "
        f"pytorch_model.bin; found {found}")


def write_safetensors(tensors: dict[str, np.ndarray], path: Path) -> None:
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(path), metadata={"format": "pt"})
