"""The library keeps a readable shape (issue 28): no function in xenc_jax/ longer than
MAX_FUNCTION_LINES lines and no module longer than MAX_MODULE_LINES lines.

Why these bounds: a function of more than ~80 lines does several jobs that cannot be read, tested
or changed one at a time (`train()` was 197 lines before it was cut into stages); a module of more
than ~600 lines holds several jobs too (`inference.py` was runner + compile cache + cpuinfo + cache
dirs + progress + sharding + dtypes). Lines are counted from the `def` (or the first line of the
file) to the last line, docstrings and comments included: they are read too.

Read from the source (ast), nothing imported, so this runs in a fraction of a second.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "xenc_jax"
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 600

# Explicit exceptions, each with the reason it cannot reasonably be split. Keep these empty: a
# long function is split by job, a long module into modules named for what they hold. An entry
# that is no longer needed fails test_allow_lists_hold_only_what_is_still_too_long.
# "path/relative/to/xenc_jax.py:Qualified.name" -> why
LONG_FUNCTIONS: dict[str, str] = {}
# "path/relative/to/xenc_jax.py" -> why
LONG_MODULES: dict[str, str] = {}


def _functions(tree: ast.Module):
    """(qualified name, lines) of every function and method, nested ones included."""
    todo = [(node, "") for node in tree.body]
    while todo:
        node, prefix = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node.end_lineno - node.lineno + 1
            todo += [(child, f"{name}.") for child in ast.iter_child_nodes(node)]
        elif isinstance(node, ast.stmt):  # functions defined under if/try/with blocks
            todo += [(child, prefix) for child in ast.iter_child_nodes(node)]


def measure() -> tuple[dict[str, int], dict[str, int]]:
    """({"file:function": lines} over MAX_FUNCTION_LINES, {"file": lines} over MAX_MODULE_LINES)."""
    long_functions, long_modules = {}, {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        text = path.read_text(encoding="utf-8")
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            long_modules[rel] = n
        for name, n in _functions(ast.parse(text)):
            if n > MAX_FUNCTION_LINES:
                long_functions[f"{rel}:{name}"] = n
    return long_functions, long_modules


def test_the_measure_counts_nested_and_method_lines():
    tree = ast.parse("class A:\n    def f(self):\n        def g():\n            pass\n\n        return g\n"
                     "if True:\n    def h():\n        return 1\n")
    assert dict(_functions(tree)) == {"A.f": 5, "A.f.g": 2, "h": 2}


def test_no_function_over_the_limit():
    long_functions, _ = measure()
    bad = {k: n for k, n in long_functions.items() if k not in LONG_FUNCTIONS}
    assert not bad, (f"functions over {MAX_FUNCTION_LINES} lines (split them by job): "
                     + ", ".join(f"{k} ({n} lines)" for k, n in sorted(bad.items())))


def test_no_module_over_the_limit():
    _, long_modules = measure()
    bad = {k: n for k, n in long_modules.items() if k not in LONG_MODULES}
    assert not bad, (f"modules over {MAX_MODULE_LINES} lines (split them into modules named for what "
                     "they hold): " + ", ".join(f"{k} ({n} lines)" for k, n in sorted(bad.items())))


def test_allow_lists_hold_only_what_is_still_too_long():
    long_functions, long_modules = measure()
    stale = sorted(set(LONG_FUNCTIONS) - set(long_functions)) + sorted(set(LONG_MODULES) - set(long_modules))
    assert not stale, f"no longer over the limit: remove from the allow-lists in {Path(__file__).name}: {stale}"
