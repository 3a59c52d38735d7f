"""The package's layout (issue 26): no import cycles in training and evaluation, evaluation never imports the
interfaces, and the embedded model's folder ships only the model."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "src" / "ptiedit"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """ptiedit module -> the ptiedit modules it imports anywhere in its file (lazy and TYPE_CHECKING ones too)."""
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                edges.add(base)
                edges |= {f"{base}.{alias.name}" for alias in node.names}  # `from . import submodule`
        graph[name] = {edge for edge in edges if edge in modules and edge != name}
    return graph


def cycle_within(graph: dict[str, set[str]], prefix: str) -> list[str] | None:
    """A cycle among the modules whose names start with prefix, or None."""
    nodes = {name for name in graph if name.startswith(prefix)}
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node] & nodes):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(nodes):
        if node not in state and (found := visit(node)):
            return found
    return None


@pytest.mark.parametrize("prefix", ["ptiedit.training", "ptiedit.evaluation", "ptiedit.interfaces"])
def test_no_import_cycles(prefix):
    assert cycle_within(imports(), prefix) is None


def test_the_finder_sees_a_cycle():
    assert cycle_within({"a.x": {"a.y"}, "a.y": {"a.x"}, "b": set()}, "a") == ["a.x", "a.y", "a.x"]


def test_evaluation_and_training_do_not_import_the_interfaces():
    graph = imports()
    for name, edges in graph.items():
        if name.startswith(("ptiedit.evaluation", "ptiedit.training")):
            assert not {edge for edge in edges if edge.startswith("ptiedit.interfaces")}, name


def test_the_embedded_model_folder_holds_only_the_model():
    folder = PACKAGE / "models" / "embedded" / "toyworld-textured"
    assert (folder / "model_index.json").is_file()
    assert not list(folder.rglob("*.csv"))  # training logs live in docs/training
