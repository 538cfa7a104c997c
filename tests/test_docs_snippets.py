"""The docs do not rot: what README.md and docs/*.md (not the benchmark tables) show a user still
matches the code, checked without loading a model.

- every fenced python block parses (ast), and every `from xenc_jax... import X` / `xenc_jax.a.b`
  name exists;
- every call in those blocks and in inline code spans to a public class or function (and to
  methods of `ce`, `bi`, `be`, `plan` or a variable assigned from one) uses keyword arguments that
  its signature has, and every `ce.attr` it reads exists;
- every `xenc ...` command in a shell block parses with the CLI's own argparse parser (options,
  choices, required arguments), and a `train`/`eval` command's `--config` and `--set` keys load;
- every `xenc <sub> --option` in the prose is an option of that subcommand, every `--option` is
  one of some subcommand (or of the named non-xenc tool), every `--set key=` is a config key;
- every file path, `file.py:name` and `test_file.py::test_name` named exists.

Whether the snippets' *outputs* are as described was checked by running them (session notes,
s17 task G); this file guards the names and options, which are what rots when code changes.
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import importlib
import inspect
import io
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md"] + [ROOT / "docs" / f"{n}.md" for n in
                               ("model_families", "multihost", "reliability", "recipe_check")]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
# Options in the docs that belong to other tools than xenc: where each one is defined.
OTHER_TOOLS = {"--no-deps": "pip", "--xla_force_host_platform_device_count": "XLA_FLAGS",
               "--stage": ROOT / "scripts" / "recipe_check.py", "--arms": ROOT / "scripts" / "recipe_check.py"}
MIN_COMMANDS = 20   # the docs hold 25 `xenc` commands in shell blocks (December 2026)
# Variables the prose uses without assigning them (README: `ce.warmup()`, `bi.encode_stream(...)`).
PROSE_VARS = {"ce": "CrossEncoder", "bi": "BiEncoder", "be": "BiEncoder", "plan": "ShardingPlan"}


def _blocks(langs):
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            if m.group(1) in langs:
                yield doc, text.count("\n", 0, m.start(2)) + 1, m.group(2)


def _inline(doc):
    """Inline code spans outside fenced blocks, with their line numbers."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), doc.read_text(encoding="utf-8"))
    for m in re.finditer(r"`([^`\n]+)`", text):
        yield text.count("\n", 0, m.start()) + 1, m.group(1)


def _where(doc, line):
    return f"{doc.relative_to(ROOT)}:{line}"


@pytest.fixture(scope="module")
def parser_and_subcommands():
    from xenc_jax.cli import build_parser
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return parser, {name: {o for a in p._actions for o in a.option_strings} for name, p in subs.items()}


# ----------------------------------------------------------------------------- python

def test_python_blocks_parse():
    bad = []
    for doc, line, body in _blocks({"python"}):
        try:
            ast.parse(body)
        except SyntaxError as e:
            bad.append(f"{_where(doc, line + (e.lineno or 1) - 1)}: {e.msg}")
    assert not bad, "python blocks that do not parse:\n" + "\n".join(bad)


def _namespace():
    from xenc_jax import multihost
    from xenc_jax.hf.pretrained import load_pretrained
    from xenc_jax.sharding import ShardingPlan, make_mesh
    import xenc_jax
    names = {n: getattr(xenc_jax, n) for n in ("CrossEncoder", "BiEncoder", "BucketConfig", "semantic_search",
                                                 "retrieve_rerank", "evaluate_retrieval", "mine_hard_negatives")}
    return {**names, "multihost": multihost, "ShardingPlan": ShardingPlan, "make_mesh": make_mesh,
            "load_pretrained": load_pretrained}


def _has_member(cls, name):
    """A class attribute, or an attribute its (or a base's) code assigns on self."""
    if hasattr(cls, name):
        return True
    return any(re.search(rf"self\.{name}\s*[:=]", inspect.getsource(c)) for c in cls.__mro__
               if c.__module__.startswith("xenc_jax"))


def _check_calls(tree, names, where, bad):
    variables = {v: names[c] for v, c in PROSE_VARS.items()}
    for node in ast.walk(tree):   # assignments first: `ce = CrossEncoder(...)` types `ce`
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) and \
                isinstance(node.value.func, ast.Name) and inspect.isclass(names.get(node.value.func.id)):
            for t in node.targets:
                if isinstance(t, ast.Name):
                    variables[t.id] = names[node.value.func.id]
    for node in ast.walk(tree):
        target, label = None, None
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner = variables.get(node.value.id) or names.get(node.value.id)
            if owner is not None and not (_has_member(owner, node.attr) if inspect.isclass(owner)
                                          else hasattr(owner, node.attr)):
                bad.append(f"{where}: {node.value.id}.{node.attr} does not exist")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in names:
            target, label = names[f.id], f.id
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            owner = variables.get(f.value.id) or names.get(f.value.id)
            if owner is not None and hasattr(owner, f.attr):
                target, label = getattr(owner, f.attr), f"{f.value.id}.{f.attr}"
        if target is None:
            continue
        params = inspect.signature(target).parameters
        if any(p.kind == p.VAR_KEYWORD for p in params.values()):
            continue
        for kw in node.keywords:
            if kw.arg is not None and kw.arg not in params:
                bad.append(f"{where}: {label}(..., {kw.arg}=) is not a parameter of {label}")


def test_names_and_keywords_in_python_exist():
    names = _namespace()
    bad = []
    for doc, line, body in _blocks({"python"}):
        try:
            tree = ast.parse(body)
        except SyntaxError:
            continue  # test_python_blocks_parse names it
        _check_calls(tree, {**names, **_imported(body, _where(doc, line), bad)}, _where(doc, line), bad)
    for doc in DOCS:
        for line, span in _inline(doc):
            if "/" in span or re.search(r"\.(py|md|jsonl?|npy|tsv|parquet)\b", span):
                continue  # a path (`docs/multihost.md` parses as a division)
            try:
                tree = ast.parse(span, mode="eval")
            except SyntaxError:
                continue  # prose such as `load_pretrained(plan=)`: not an expression
            _check_calls(tree, names, _where(doc, line), bad)
    assert not bad, "\n".join(bad)


def _imported(body, where, bad) -> dict:
    out = {}
    for m in re.finditer(r"from (xenc_jax(?:\.\w+)*) import ([\w, ]+)", body):
        module = importlib.import_module(m.group(1))
        for name in filter(None, (n.strip() for n in m.group(2).split(","))):
            try:
                out[name] = getattr(module, name) if hasattr(module, name) else \
                    importlib.import_module(f"{m.group(1)}.{name}")
            except ImportError:
                bad.append(f"{where}: {m.group(0)}: {name} does not exist")
    return out


def test_dotted_xenc_jax_names_exist():
    bad = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"from (xenc_jax(?:\.\w+)*) import ([\w, ]+)", text):
            _imported(m.group(0), _where(doc, text.count("\n", 0, m.start()) + 1), bad)
        for m in re.finditer(r"\bxenc_jax((?:\.\w+)+)", text):
            obj, path = importlib.import_module("xenc_jax"), "xenc_jax"
            for part in m.group(1)[1:].split("."):
                if part == "py" or inspect.isfunction(obj) or inspect.isclass(obj):
                    break
                if hasattr(obj, part):
                    obj, path = getattr(obj, part), f"{path}.{part}"
                    continue
                try:
                    obj, path = importlib.import_module(f"{path}.{part}"), f"{path}.{part}"
                except ImportError:
                    bad.append(f"{_where(doc, text.count(chr(10), 0, m.start()) + 1)}: {m.group(0)}")
                    break
    assert not bad, "names the docs give that do not exist:\n" + "\n".join(bad)


# ----------------------------------------------------------------------------- command line

def _shell_commands():
    """(where, argv) of every `xenc ...` (or `python -m xenc_jax.cli ...`) in bash / plain blocks."""
    for doc, first, body in _blocks({"bash", "sh", ""}):
        lines = body.split("\n")
        i = 0
        while i < len(lines):
            start, text = i, lines[i]
            while text.endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text[:-1] + " " + lines[i]
            i += 1
            for m in re.finditer(r"(?:^|[\s|;&(])(?:\S*/)?(?:xenc|python -m xenc_jax\.cli)\s+(.*)", text):
                lex = shlex.shlex(m.group(1).replace("$k", "0"), posix=True, punctuation_chars=";&|")
                lex.whitespace_split, lex.commenters = True, "#"
                argv = []
                for tok in lex:
                    if tok and set(tok) <= set(";&|"):
                        break
                    if tok != "...":  # a placeholder for the rest of a command
                        argv.append(tok)
                yield _where(doc, first + start), argv


def test_every_shell_command_parses(parser_and_subcommands):
    from xenc_jax.train.config import apply_overrides, load_config
    parser, _ = parser_and_subcommands
    seen, bad = 0, []
    for where, argv in _shell_commands():
        seen += 1
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                args = parser.parse_args(argv)
        except SystemExit as e:
            if e.code:
                bad.append(f"{where}: xenc {' '.join(argv)}\n    {err.getvalue().strip().splitlines()[-1]}")
            continue
        if args.command in ("train", "eval"):
            try:
                apply_overrides(load_config(str(ROOT / args.config)), args.set).validate()
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                bad.append(f"{where}: xenc {' '.join(argv)}\n    {type(e).__name__}: {e}")
    assert seen >= MIN_COMMANDS, f"only {seen} commands found: the extraction broke"
    assert not bad, "documented commands the CLI refuses:\n" + "\n".join(bad)


def test_prose_options_exist(parser_and_subcommands):
    _, subs = parser_and_subcommands
    every = set().union(*subs.values())
    bad = []
    for doc in DOCS:
        for line, span in _inline(doc):
            m = re.match(r"xenc ([\w-]+)(.*)", span)
            if m:
                if m.group(1) not in subs:
                    bad.append(f"{_where(doc, line)}: `{span}`: no subcommand {m.group(1)}")
                    continue
                for opt in re.findall(r"(?<![\w-])--[a-z][\w-]*", m.group(2)):
                    if opt not in subs[m.group(1)]:
                        bad.append(f"{_where(doc, line)}: `{span}`: xenc {m.group(1)} has no {opt}")
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"(?<![\w-])(--[a-z][\w-]*)", text):
            opt, where = m.group(1), _where(doc, text.count("\n", 0, m.start()) + 1)
            tool = OTHER_TOOLS.get(opt)
            if opt in every or opt == "--version" or (isinstance(tool, str)):
                continue
            if tool is None or f'"{opt}"' not in tool.read_text(encoding="utf-8"):
                bad.append(f"{where}: {opt} is no option of any xenc subcommand")
    assert not bad, "\n".join(bad)


def _config_keys(obj, prefix=""):
    keys = set()
    for f in dataclasses.fields(obj):
        keys.add(prefix + f.name)
        if dataclasses.is_dataclass(getattr(obj, f.name)):   # a section the preset fills (evaluator)
            keys |= _config_keys(getattr(obj, f.name), f"{prefix}{f.name}.")
    return keys


def test_set_keys_are_config_keys():
    """A prose `--set key=` names no preset: the key must exist in TrainConfig or in some preset's
    sections (`evaluator.*` exists only where a preset sets an evaluator)."""
    from xenc_jax.train.config import TrainConfig, load_config
    keys = _config_keys(TrainConfig())
    for preset in sorted((ROOT / "configs").glob("*.py")):
        keys |= _config_keys(load_config(str(preset)))
    bad = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"--set ([\w.]+)=", text):
            if m.group(1) != "key" and m.group(1) not in keys:   # `--set key=value`: the syntax
                bad.append(f"{_where(doc, text.count(chr(10), 0, m.start()) + 1)}: --set {m.group(1)}")
    assert not bad, "--set keys that no config has:\n" + "\n".join(bad)


def test_multihost_rules_table_is_the_rules_table():
    """docs/multihost.md's logical axis x strategy table says what sharding.axis_rules maps, on a
    (data, fsdp, model) mesh: every logical axis, every cell."""
    from xenc_jax.sharding import STRATEGIES, axis_rules
    text = (ROOT / "docs" / "multihost.md").read_text(encoding="utf-8")
    header = re.search(r"^\| logical axis \|(.*)\|$", text, re.M)
    strategies = [s.strip(" `").split()[0].strip("`") for s in header.group(1).split("|")]
    assert strategies == list(STRATEGIES)
    cell = {"–": None, "data (+fsdp)": ("data", "fsdp"), "fsdp, else data": "fsdp", "model": "model"}
    documented = {}
    for row in re.finditer(r"^\| ([a-z_, ]+) \|(.*)\|$", text[header.end():], re.M):
        for axis in row.group(1).split(", "):
            documented[axis] = [cell[c.strip()] for c in row.group(2).split("|")]
    actual = {}
    for i, strategy in enumerate(STRATEGIES):
        for axis, mesh_axes in axis_rules(strategy):
            actual.setdefault(axis, [None] * len(STRATEGIES))[i] = mesh_axes
    assert documented == actual


# ----------------------------------------------------------------------------- references

def _find(path: str):
    for base in (ROOT, ROOT / "xenc_jax", ROOT / "xenc_jax" / "models", ROOT / "tests"):
        if (base / path).exists():
            return base / path
    return None


def test_named_files_tests_and_symbols_exist():
    bad = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        line = lambda m: _where(doc, text.count("\n", 0, m.start()) + 1)  # noqa: E731
        # paths with a folder (a bare `model.py` is relative to a family folder the text names)
        for m in re.finditer(r"(?<![\w/.<>-])((?:[\w-]+/)+[\w.-]*\w)(?::(\w+))?(?![\w<])", text):
            path, symbol = m.groups()
            if path.split("/")[0] not in ("xenc_jax", "tests", "scripts", "configs", "docs", "examples",
                                          "models", "hf", "cli", "train", "batching"):
                continue
            found = _find(path)
            if found is None:
                bad.append(f"{line(m)}: {path} does not exist")
            elif symbol and found.suffix == ".py" and not re.search(
                    rf"^\s*(?:def|class)\s+{symbol}\b|^\s*{symbol}\s*[:=]", found.read_text(encoding="utf-8"), re.M):
                bad.append(f"{line(m)}: {path} defines no {symbol}")
        current = None   # `test_a.py::test_x`, `::test_y`: the last file named
        for m in re.finditer(r"(test_\w+\.py)|::(test_\w+)", text):
            if m.group(1):
                current = m.group(1)
                if not (ROOT / "tests" / current).exists():
                    bad.append(f"{line(m)}: tests/{current} does not exist")
            elif current is None or not re.search(rf"def {m.group(2)}\b",
                                                  (ROOT / "tests" / current).read_text(encoding="utf-8")):
                bad.append(f"{line(m)}: {current}::{m.group(2)} does not exist")
    assert not bad, "the docs name what is not there:\n" + "\n".join(bad)


def test_examples_compile_and_their_usage_options_exist():
    bad = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        source = path.read_text(encoding="utf-8")
        compile(source, str(path), "exec")
        usage = ast.get_docstring(ast.parse(source)) or ""
        for opt in set(re.findall(r"(?<![\w-])--[a-z][\w-]*", usage)):
            if opt not in OTHER_TOOLS and f'"{opt}"' not in source:
                bad.append(f"{path.name}: its docstring shows {opt}, which its parser does not define")
    assert not bad, "\n".join(bad)
