"""`xenc search ... | head` (a reader that closes the pipe early) ends quietly with 141, as other
Unix tools do, instead of `xenc search: error: [Errno 32] Broken pipe` (found running the README's
commands, s17 task G). No model: the command's work is replaced by a flood of stdout lines, inside
the real `main` (its check_text_args step), written through a real pipe whose reader closes it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOD = """
import sys
import xenc_jax.cli as cli
def flood(args):
    for i in range(20000):   # ~0.6 MB: far beyond a pipe buffer (64 KiB)
        print(f"line {i} " + "x" * 20)
cli.check_text_args = flood
sys.exit(cli.main(["merge-parts", "nothing-to-merge"]))
"""


def _run(reader_cmd: list[str]):
    writer = subprocess.Popen([sys.executable, "-c", FLOOD], cwd=ROOT, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    reader = subprocess.run(reader_cmd, stdin=writer.stdout, capture_output=True, timeout=60)
    writer.stdout.close()   # only the reader holds the read end now
    err = writer.stderr.read().decode()
    return writer.wait(timeout=60), err, reader.stdout


def test_a_reader_closing_the_pipe_ends_the_command_quietly():
    code, err, got = _run(["head", "-n", "2"])
    assert got == b"line 0 " + b"x" * 20 + b"\nline 1 " + b"x" * 20 + b"\n"
    assert code == 141, (code, err)
    assert "Broken pipe" not in err and "Exception ignored" not in err and "Traceback" not in err, err


def test_a_reader_that_reads_everything_sees_every_line():
    code, err, got = _run(["wc", "-l"])   # the handler changes nothing while the pipe is open
    assert code == 2, (code, err)         # then merge-parts' own error: nothing to merge
    assert int(got) == 20000 and "merge-parts: error:" in err, (got, err)
