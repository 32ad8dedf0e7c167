"""The mirrors' import cycle, kept explicit and kept small.

nginx's files share globals through ``extern`` declarations, so ngxlab's
mirrors of them import each other in a cycle. These tests hold it to six
modules, hold the imports inside it to module bindings at the top of each
file (so any of the six can be imported first), and hold every ngxlab
module to one name wherever it is imported (never an ``ngx_`` name: that
prefix means nginx has the name).
"""

from __future__ import annotations

import ast
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ngxlab"
CYCLE = {"process", "process_cycle", "cycle", "nginx", "daemon", "_http"}


def _mirror_modules():
    return {p.stem: p for p in PACKAGE.glob("*.py")}


def _imported_modules(node, names):
    """The ngxlab top-level modules (of ``names``) an import node names."""
    found = []
    if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        if node.module == "ngxlab":
            found = [a.name for a in node.names]
        elif node.module.startswith("ngxlab."):
            found = [node.module.split(".")[1]]
    elif isinstance(node, ast.Import):
        found = [a.name.split(".")[1] for a in node.names
                 if a.name.startswith("ngxlab.")]
    return [m for m in found if m in names]


def _graph():
    """module -> {module it imports}, from every import statement in the
    file, at the top or inside a function."""
    modules = _mirror_modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        graph[name] = {m for node in ast.walk(tree)
                       for m in _imported_modules(node, modules)}
    return graph


def _strongly_connected(graph):
    """Tarjan's algorithm: the strongly connected components of ``graph``."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_one_import_cycle_of_six_modules():
    cycles = [c for c in _strongly_connected(_graph()) if len(c) > 1]
    assert cycles == [CYCLE], (
        "the mirrors' import cycle changed: a module that joins it, or a "
        "second cycle, needs a reason (and this test updated)")


def test_the_tarjan_helper_finds_a_cycle():
    # the helper above, on a graph whose answer is known
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    got = sorted(sorted(c) for c in _strongly_connected(graph))
    assert got == [["a", "b", "c"], ["d"], ["e"]]


def test_imports_inside_the_cycle_are_modules_at_the_top():
    """``from ngxlab import process`` works while process is half loaded;
    ``from ngxlab.process import name`` does not, nor does an import inside
    a function show the cycle where a reader looks for it."""
    wrong = []
    for name in sorted(CYCLE):
        path = PACKAGE / f"{name}.py"
        tree = ast.parse(path.read_text(), str(path))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            members = _imported_modules(node, CYCLE - {name})
            if not members:
                continue
            where = f"{name}.py:{node.lineno}"
            if id(node) not in top:
                wrong.append(f"{where}: inside a function")
            if not (isinstance(node, ast.ImportFrom)
                    and node.module == "ngxlab"):
                wrong.append(f"{where}: names from a module of the cycle")
    assert not wrong


@pytest.mark.parametrize("first", sorted(CYCLE))
def test_any_module_of_the_cycle_can_be_imported_first(first):
    code = (f"import ngxlab.{first}\n"
            "import ngxlab.nginx, ngxlab.process_cycle as pc\n"
            "assert pc.process.ngx_processes is ngxlab.process.ngx_processes\n"
            "assert ngxlab.cycle.MAX_WORKER_PROCESSES * 2 "
            "== ngxlab.process.NGX_MAX_PROCESSES\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _code_sources():
    """(where, python source) of every file and chapter code cell."""
    for path in sorted([*PACKAGE.rglob("*.py"), *(ROOT / "tests").glob("*.py")]):
        yield str(path.relative_to(ROOT)), path.read_text()
    for path in sorted((ROOT / "book").glob("*.md")):
        text = path.read_text()
        for i, m in enumerate(re.finditer(
                r"^```\{code-cell\}[^\n]*\n(.*?)^```", text, re.M | re.S)):
            body = re.sub(r"\A---\n.*?^---\n", "", m.group(1), flags=re.M | re.S)
            body = "\n".join(line for line in body.splitlines()
                             if not line.startswith(("%", "!", ":")))
            yield f"{path.relative_to(ROOT)} cell {i}", body


def _bindings(where, source):
    """(module, name it is bound to) for each ngxlab module imported as a
    module in ``source``."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        pytest.fail(f"{where}: cannot parse")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 \
                and node.module and node.module.split(".")[0] == "ngxlab":
            for a in node.names:
                dotted = f"{node.module}.{a.name}"
                path = ROOT.joinpath(*dotted.split("."))
                if path.with_suffix(".py").exists() or path.is_dir():
                    yield dotted, a.asname or a.name
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ngxlab.") and a.asname:
                    yield a.name, a.asname


def test_one_name_per_module_and_none_with_the_ngx_prefix():
    names, wrong = {}, []
    for where, source in _code_sources():
        for module, name in _bindings(where, source):
            names.setdefault(module, {}).setdefault(name, where)
            if name.startswith(("ngx_", "NGX_")):
                wrong.append(f"{where}: {module} as {name}")
    wrong += [f"{module} under {len(by_name)} names: {by_name}"
              for module, by_name in sorted(names.items()) if len(by_name) > 1]
    assert not wrong
    # the scan saw the aliases it is about
    assert set(names["ngxlab.process_cycle"]) == {"pc"}
    assert set(names["ngxlab.cycle"]) == {"cy"}


def test_every_process_cycle_flag_is_reset():
    from ngxlab import process_cycle as pc

    path = PACKAGE / "process_cycle.py"
    defined = {t.id for node in ast.parse(path.read_text()).body
               if isinstance(node, ast.Assign)
               and isinstance(node.value, ast.Constant) and node.value.value == 0
               for t in node.targets
               if isinstance(t, ast.Name) and t.id.startswith("ngx_")}
    assert set(pc._flags) == defined - {"ngx_worker"}
    assert len(pc._flags) == len(set(pc._flags)) == 16

    saved = {name: getattr(pc, name) for name in
             (*pc._flags, "ngx_process", "ngx_worker", "nginx_quirks",
              "keep_inherited_channels")}
    received, observers = list(pc._received), list(pc._table_observers)
    try:
        for flag in pc._flags:
            setattr(pc, flag, 1)
        pc.ngx_process = pc.NGX_PROCESS_WORKER
        pc.ngx_worker = 3
        pc.nginx_quirks = pc.keep_inherited_channels = True
        pc._received.append(print)
        pc._table_observers.append(print)
        pc._reset()
        assert all(getattr(pc, flag) == 0 for flag in pc._flags)
        assert pc.ngx_process == pc.NGX_PROCESS_SINGLE and pc.ngx_worker == 0
        assert pc.nginx_quirks is False and pc.keep_inherited_channels is False
        assert pc._received == [] and pc._table_observers == []
    finally:
        for name, value in saved.items():
            setattr(pc, name, value)
        pc._received[:] = received
        pc._table_observers[:] = observers
