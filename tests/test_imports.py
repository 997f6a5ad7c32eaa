"""One import direction between the project's packages (README, "Layout"), read from the source with ast:
core imports no other project package; envs at most core; teacher core and envs; student core, envs and
teacher; transfer all of these; benchmarks anything. Lazy imports inside functions count too."""
import ast
import pathlib

from conftest import ROOT

ALLOWED = {"core": set(), "envs": {"core"}, "teacher": {"core", "envs"}, "student": {"core", "envs", "teacher"},
           "transfer": {"core", "envs", "teacher", "student"},
           "benchmarks": {"core", "envs", "teacher", "student", "transfer"}}


def imported_packages(path: pathlib.Path) -> set[tuple[str, int]]:
    """(top-level package, line) of every absolute import in a file."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {(alias.name.split(".")[0], node.lineno) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add((node.module.split(".")[0], node.lineno))
    return out


def test_imports_follow_one_direction():
    wrong = []
    for package, allowed in ALLOWED.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for top, line in sorted(imported_packages(path)):
                if top in ALLOWED and top != package and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {top}")
    assert not wrong, "imports against the direction core <- envs <- teacher <- student <- transfer:\n" + "\n".join(wrong)


def test_the_check_sees_lazy_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("import os\n\ndef f():\n    from transfer.loop import Trainer\n    import core.nets as n\n")
    assert imported_packages(source) == {("os", 1), ("transfer", 4), ("core", 5)}


def module_graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports (lazy imports included; `from pkg import mod` counts
    as importing pkg.mod)."""
    files = {}
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            files[name[:-len(".__init__")] if name.endswith(".__init__") else name] = path
    graph = {}
    for name, path in files.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for a in node.names:
                    full = f"{node.module}.{a.name}"
                    deps.add(full if full in files else node.module)
        graph[name] = {d for d in deps if d in files and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, path = [], {}, []

    def visit(u):
        state[u] = "open"
        path.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append(path[path.index(v):] + [v])
            elif v not in state:
                visit(v)
        path.pop()
        state[u] = "done"
    for u in sorted(graph):
        if u not in state:
            visit(u)
    return found


def test_no_import_cycles_between_modules():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]  # the check works
    found = cycles(module_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_loop_receives_method_parts_from_the_composition_root():
    """transfer/loop.py imports nothing from teacher/ or student/ (nor the components registry): the teacher,
    the components and the initial weights come from transfer/build.py."""
    graph = module_graph()
    assert "transfer.components" in graph["transfer.build"] and "transfer.loop" in graph["transfer.build"]
    wrong = {m for m in graph["transfer.loop"] if m.split(".")[0] in ("teacher", "student") or m == "transfer.components"}
    assert not wrong, f"transfer/loop.py imports {sorted(wrong)}; build those parts in transfer/build.py"
