"""The package's layer rules, read from the import statements (AST only: no torch import, well under a second).

Layers, bottom to top:
  base        errors, io, paths, config, precision, distributed, memory, native (C kernels), fused
  core        tokenizer, corpus, model, objectives, data, optim, checkpoint
  library     pretrained, train, calibrate, generate, convert/, eval/
  front       cli/
and hf/: the remote code that ships inside an export folder (torch + transformers + itself only).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "gptbert"
BASE = {"errors", "io", "paths", "config", "precision", "distributed", "memory", "native", "fused"}
OPTIONAL = {"transformers", "lm_eval", "tensorboard", "scipy", "huggingface_hub"}  # may be imported lazily


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool, int]]:
    """(imported module, imported inside a function, line) for every import of one file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = []

    def visit(node, local: bool):
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                out.extend((a.name, local, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - child.level + 1]
                    mod = ".".join(base + ([child.module] if child.module else []))
                    names = [f"{mod}.{a.name}" for a in child.names] if not child.module else [mod]
                    out.extend((n, local, child.lineno) for n in names)
                else:
                    out.append((child.module, local, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return out


FILES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}
IMPORTS = {name: _imports(p) for name, p in FILES.items()}


def _internal(name: str) -> list[tuple[str, bool, int]]:
    """Imports of gptbert modules, as names below the package ('model', 'eval.scoring', ...)."""
    return [(m[len("gptbert."):] if m.startswith("gptbert.") else "", local, line)
            for m, local, line in IMPORTS[name] if m == "gptbert" or m.startswith("gptbert.")]


def _top(sub: str) -> str:
    return sub.split(".")[0]


def _violations(rule) -> list[str]:
    bad = []
    for name in FILES:
        for sub, _, line in _internal(name):
            why = rule(name[len("gptbert."):] if name != "gptbert" else "", sub)
            if why:
                bad.append(f"{FILES[name].relative_to(PKG.parent)}:{line} imports gptbert.{sub}: {why}")
    return bad


def test_the_rules_see_the_package():
    assert {"gptbert.model", "gptbert.train", "gptbert.cli.main", "gptbert.hf.modeling_gpt_bert"} <= set(FILES)
    assert ("config", False) in {(s, l) for s, l, _ in _internal("gptbert.model")}


def test_model_imports_only_its_config():
    # fused: the same math as the torch formula it replaces, in one native pass (gptbert/fused.py)
    assert _violations(lambda me, sub: me == "model" and _top(sub) not in ("config", "fused")
                       and "the model knows only its config (and its fused kernels)") == []


def test_hf_remote_code_imports_nothing_of_gptbert():
    for name in FILES:
        if name.startswith("gptbert.hf.") and name != "gptbert.hf":
            roots = {m.split(".")[0] for m, _, _ in IMPORTS[name]}
            assert roots <= {"__future__", "math", "torch", "transformers", "gptbert"}, (name, roots)
            assert all(s.startswith("hf.") for s, _, _ in _internal(name)), name


@pytest.mark.parametrize("rule", [
    # the training loop needs neither evaluation, conversion nor transformers
    lambda me, sub: me == "train" and _top(sub) in ("eval", "convert", "hf", "pretrained") and "train imports eval/export",
    # evaluation never reaches into the training loop or the training data pipeline
    lambda me, sub: me.startswith("eval") and _top(sub) in ("train", "data", "packing", "objectives", "optim", "calibrate")
    and "eval imports the training loop or its data pipeline",
    # nothing but the CLI runs the training loop
    lambda me, sub: sub == "train" and _top(me) != "cli" and "only the CLI imports train",
    # the base layer imports nothing above it
    lambda me, sub: me in BASE and _top(sub) not in BASE and "the base layer imports upward",
    # library code never imports the command line
    lambda me, sub: _top(sub) == "cli" and _top(me) != "cli" and "library imports the CLI",
    # the core (data, model, checkpoint...) never imports the library above it
    lambda me, sub: me in ("tokenizer", "corpus", "model", "objectives", "packing", "data", "optim", "checkpoint", "words")
    and _top(sub) in ("pretrained", "train", "calibrate", "generate", "convert", "eval", "cli")
    and "the core imports the library",
], ids=["train", "eval", "only-cli-trains", "base", "no-cli", "core"])
def test_layer_rule(rule):
    assert _violations(rule) == []


def test_package_never_imports_bench_or_tests():
    for name in FILES:
        roots = {m.split(".")[0] for m, _, _ in IMPORTS[name]}
        assert not roots & {"bench", "tests", "conftest", "helpers"}, name


def test_import_style():
    """Relative imports inside the package; function-local imports only for optional dependencies."""
    for name, path in FILES.items():
        text = path.read_text(encoding="utf-8")
        for m, local, line in IMPORTS[name]:
            if local:
                # (hf/ modules import transformers, tensorboard comes through torch.utils)
                assert m.split(".")[0] in OPTIONAL or m.startswith(("gptbert.hf.", "torch.utils.tensorboard")), \
                    f"{path}:{line}: function-local import of {m} (only optional dependencies may be lazy)"
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("gptbert"):
                raise AssertionError(f"{path}:{node.lineno}: absolute import of {node.module} inside the package")
            if isinstance(node, ast.Import) and any(a.name.startswith("gptbert") for a in node.names):
                raise AssertionError(f"{path}:{node.lineno}: absolute import inside the package")
