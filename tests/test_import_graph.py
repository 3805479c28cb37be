"""The package's import graph has no cycle, counting imports inside functions too.

An import inside a function is allowed only to keep TensorFlow out of an entry
point's ``--help`` (it then says ``# deferred:``), never to dodge a cycle: with
every import of every module as an edge, the graph must still be acyclic.
The graph is read from the source with `ast`, so nothing is imported.
"""

import ast
import pathlib

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "sst_tf"


def module_names() -> dict[str, pathlib.Path]:
    """Dotted module name -> file, for every module of the package."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(path: pathlib.Path, modules: dict) -> set[str]:
    """The package's modules that `path` imports anywhere (module level or in a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name in modules)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in modules else node.module)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as a list of nodes (first == last), or None."""
    state = {}  # node -> "open" while on the stack, "done" after

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_inside_functions_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import sst_tf.cli\nfrom sst_tf import losses, SOMETHING\n"
                      "def f():\n    from sst_tf.datasets.splits import Split\n")
    modules = module_names()
    assert imported_modules(source, modules) == {
        "sst_tf.cli", "sst_tf.losses", "sst_tf", "sst_tf.datasets.splits"}


def test_package_import_graph_has_no_cycle():
    modules = module_names()
    assert "sst_tf.losses" in modules and "sst_tf.datasets" in modules
    graph = {name: imported_modules(path, modules) - {name} for name, path in modules.items()}
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_package_imports_nothing_of_the_study_or_the_scripts():
    """sst_tf is the library: the study (study/) and the scripts are its clients."""
    outside = {p.stem for folder in ("study", "scripts", "scripts/benchmarks")
               for p in (PACKAGE.parent / folder).glob("*.py")}
    assert "compare" in outside and "clock" in outside  # the walk sees the study
    for name, path in module_names().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = {node.module.split(".")[0]}
            else:
                continue
            assert not roots & (outside | {"study", "scripts", "benchmarks"}), (name, roots)
    assert not (PACKAGE / "clock.py").exists()
