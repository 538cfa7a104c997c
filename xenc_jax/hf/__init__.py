"""The only place that knows Hugging Face names and formats (import submodules directly)."""
import logging

# `import transformers` without torch logs "PyTorch was not found. Models won't be available ..."
# on every run. xenc_jax needs transformers only for tokenizers, so to a user of xenc it is
# alarming and irrelevant. This filter drops exactly that record of transformers' root logger
# (installed before transformers is imported: any xenc_jax import goes through this package);
# every other transformers warning still shows.
TORCH_ADVISORY = "PyTorch was not found. Models won't be available"


class _DropTorchAdvisory(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TORCH_ADVISORY)


def quiet_torch_advisory() -> None:
    logger = logging.getLogger("transformers")
    if not any(isinstance(f, _DropTorchAdvisory) for f in logger.filters):
        logger.addFilter(_DropTorchAdvisory())


quiet_torch_advisory()
