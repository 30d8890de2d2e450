"""The package layout holds: no import cycle inside `advisor/`, and the read-only commands (recommend, export,
studies, pareto) never import torch or optuna, run the way a user runs them."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_DB = ROOT / "studies" / "example" / "advisor.db"


def import_graph(root: Path, package: str = "advisor") -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at module top or inside functions (a lazy import that
    closes a cycle is still a cycle in the design)."""
    files = {}
    for p in (root / package).rglob("*.py"):
        parts = list(p.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = p

    def known(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        here = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            deps |= {k for k in map(known, names) if k and k != mod}
        graph[mod] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_no_import_cycle_inside_advisor():
    found = cycles(import_graph(ROOT))
    assert not found, f"import cycles inside advisor/: {found}"


LAYERS = [
    {"advisor", "errors", "units", "startup", "parsing"},  # definitions that import nothing of the package: any layer may use them
    {"files", "registry", "baselines", "terminal", "libenv"},  # leaf helpers and definitions any layer above may use
    {"hub"},  # whether the hub answers, and what its client reads at import (libenv's variables among it)
    {"hardware", "models"},
    {"quant"},
    {"eval", "offload", "results"},
    {"tune"},
    {"export", "recommend"},
    {"report"},
    {"commands"},
    {"cli"},
    {"__main__"},
]


def _area(module: str) -> str:
    """advisor.tune.study -> tune; advisor.errors -> errors; advisor -> advisor."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_packages_import_only_downwards():
    """The stack in the README's Layout section: a package imports only packages of lower layers."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    graph = import_graph(ROOT)
    areas = {_area(m) for m in graph}
    assert areas <= set(rank), f"place new top-level modules in LAYERS: {sorted(areas - set(rank))}"
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() for d in deps
                    if _area(m) != _area(d) and rank[_area(d)] >= rank[_area(m)])
    assert not upward, f"imports against the layering: {upward}"


def test_cycle_check_finds_a_cycle(tmp_path):
    pkg = tmp_path / "advisor" / "sub"
    pkg.mkdir(parents=True)
    (tmp_path / "advisor" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from advisor.sub.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import a\n")
    (pkg / "c.py").write_text("import advisor.sub.a\n")
    assert cycles(import_graph(tmp_path)) == [["advisor.sub.a", "advisor.sub.b"]]


def recommended_example_trial(budget: str) -> int:
    """The trial `advisor recommend --budget BUDGET --max-accuracy-drop 0.01 --prefer latency` picks from the
    committed example study, read from its database here (the example is regenerated with the model)."""
    from advisor.hardware.profiles import parse_budget
    from advisor.recommend import Query, recommend
    from advisor.results.store import engine_for, load_fronts

    points = load_fronts(engine_for(f"sqlite:///{EXAMPLE_DB}"), "bundled-example")
    rec = recommend(points, Query(budget_bytes=parse_budget(budget), max_accuracy_drop=0.01, prefer="latency"))
    assert rec.chosen is not None
    return rec.chosen.point.trial_number


def test_read_only_commands_import_neither_torch_nor_optuna(tmp_path):
    db = str(EXAMPLE_DB)
    trial = recommended_example_trial("1.5MiB")
    runs = [
        ["recommend", "--storage", db, "--budget", "1.5MiB", "--max-accuracy-drop", "0.01", "--prefer", "latency"],
        *(["export", "bundled-example", str(trial), "--storage", db, "--to", t]
          for t in ("llama.cpp", "hf", "vllm", "ktransformers", "json")),
        ["studies", "--storage", db],
        ["pareto", "bundled-example", "--storage", db],
    ]
    code = ("import sys\nfrom advisor.cli import run\n"
            f"for args in {runs!r}:\n"
            "    sys.argv = ['advisor', *args]\n"
            "    try:\n        run()\n    except SystemExit as e:\n        print('EXIT', args[0], e.code)\n"
            "print('HEAVY', sorted(m for m in ('torch', 'optuna', 'transformers') if m in sys.modules))\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert f"Recommended: study 'bundled-example', trial #{trial}" in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]
    exits = [ln for ln in r.stdout.splitlines() if ln.startswith("EXIT")]
    # vLLM and SGLang (ktransformers) refuse LLaDA-MoE
    assert exits == [f"EXIT {a[0]} {2 if a[-1] in ('vllm', 'ktransformers') else 0}" for a in runs], exits
    assert "HEAVY []" in r.stdout, r.stdout[-500:]


def test_a_functions_docstring_is_its_first_statement():
    """A string placed below a function's first statement (an import moved above it) is no docstring: Python
    drops it, and `help` and the docs show nothing (`budget_rows` lost its own that way)."""
    late = []
    for path in sorted((ROOT / "advisor").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                late += [f"{path.relative_to(ROOT)}:{st.lineno} ({node.name})" for st in node.body[1:]
                         if isinstance(st, ast.Expr) and isinstance(st.value, ast.Constant)
                         and isinstance(st.value.value, str)]
    assert not late, late


def test_one_table_names_a_torch_dtypes_format():
    """torch dtype name -> expert format (bfloat16 -> bf16) is defined once, in `advisor.units` (the lowest
    layer, torch-free), and every reader takes it from there: four copies had drifted apart (one took "half",
    another "torch."-prefixed names only)."""
    from advisor.baselines import full_precision
    from advisor.quant.spec import canonical_name
    from advisor.units import dtype_format

    copies = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "advisor").rglob("*.py"))
              for i, line in enumerate(p.read_text().splitlines(), 1)
              if '"bfloat16": "bf16"' in line or "'bfloat16': 'bf16'" in line]
    assert copies == ["advisor/units.py:" + copies[0].rpartition(":")[2]], copies
    for name, fmt in (("torch.bfloat16", "bf16"), ("bfloat16", "bf16"), ("half", "fp16"), ("FLOAT32", "fp32"),
                      ("bf16", "bf16"), ("float8_e4m3fn", None), ("", None), (None, None)):
        assert dtype_format(name) == fmt, name
    assert [canonical_name(n) for n in ("bfloat16", "half", "float32", "fp8_e4m3")] == ["bf16", "fp16", "fp32", "fp8"]
    assert [full_precision(d) for d in ("torch.bfloat16", "float16", "float32", None)] == ["bf16", "fp16", "fp16", "fp16"]


def test_search_spaces_link_reaches_the_shipped_spaces():
    """`search_spaces/` at the top is where a reader of the repository looks; it must show the very files the
    package ships (one copy), so `--space search_spaces/dllm.toml` and `--space dllm` read the same space."""
    link = ROOT / "search_spaces"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "advisor" / "tune" / "spaces").resolve()
    assert {"default.toml", "dllm.toml", "quick.toml"} <= {p.name for p in link.glob("*.toml")}
