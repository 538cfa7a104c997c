"""Start-up stays light: `xenc --help` / `--version` and `import xenc_jax` do not import jax.

`xenc --help` took 1.7-3 s because xenc_jax/__init__.py imported the encoders (jax, flax) eagerly;
the public names now load on first use (PEP 562) and the CLI imports heavy modules only inside the
subcommand that runs.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("jax", "jaxlib", "flax", "transformers", "torch", "tokenizers", "pyarrow", "numpy")  # numpy: 0.13 s

# One fresh process: `python -m xenc_jax.cli --help` for real (runpy, as `-m` does), then every
# subcommand's --help and --version through main(); atexit reports the heavy modules present at exit.
PROBE = """
import atexit, json, runpy, sys
heavy = json.loads(sys.argv[1])
atexit.register(lambda: print(json.dumps(sorted(m for m in heavy if m in sys.modules))))
from xenc_jax.cli import build_parser, main
subs = next(a for a in build_parser()._actions if a.dest == "command").choices
for argv in [["--version"]] + [[name, "--help"] for name in subs]:
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, (argv, e.code)
sys.argv = ["xenc", "--help"]
runpy.run_module("xenc_jax.cli", run_name="__main__")
"""


def test_cli_help_and_version_do_not_import_jax():
    res = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HEAVY)], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage: xenc" in res.stdout and "merge-parts" in res.stdout
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


def test_every_public_name_loads_and_dir_lists_it():
    """The lazy names resolve to the real objects (what `from xenc_jax import X` in the README needs);
    an unknown name is still an AttributeError / ImportError."""
    import xenc_jax
    from xenc_jax.bi_encoder import BiEncoder as direct
    star: dict = {}
    exec("from xenc_jax import *", star)  # a user's star import: every name in __all__ (exec: not allowed in a def)
    assert all(name in dir(xenc_jax) for name in xenc_jax.__all__)
    assert all(getattr(xenc_jax, name).__name__ == name for name in xenc_jax.__all__)
    assert xenc_jax.BiEncoder is direct and star["BiEncoder"] is direct and set(xenc_jax.__all__) <= set(star)
    try:
        from xenc_jax import NoSuchName  # noqa: F401
    except ImportError as e:
        assert "NoSuchName" in str(e)
    else:
        raise AssertionError("an unknown name imported")
