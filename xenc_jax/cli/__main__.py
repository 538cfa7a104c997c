"""`python -m xenc_jax.cli ...`: the `xenc` command where the console script is not on PATH."""
import sys

from . import main

sys.exit(main())
