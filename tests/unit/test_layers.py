"""platform/ is split by concern into subpackages in layers: a module imports only from its own subpackage
or a lower layer, the module import graph has no cycle, and the layout is what setuptools maps.

Every import counts: module level, inside functions, under TYPE_CHECKING, absolute and relative (a cycle
hidden in a function is still a cycle). `dashboards/` may import only the two bottom layers."""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "platform"
PREFIX = "dibs.platform"
# Lowest first; each may import itself and the layers above it in this list, never one below it.
LAYERS = (
    ("core", "config, YAML, metric names, parallelism, host settings, provenance: everything builds on it"),
    ("store", "the results store keeps rows of core's metrics and knows nothing of training"),
    ("rollout", "engines generate a Rollouts batch from any prompts; they know no task and no learner"),
    ("tasks", "problems, rewards and evaluation score what an engine generated"),
    ("learn", "model, learners, checkpoints and warm start train on a task's rollouts"),
    ("allocation", "allocators probe with engines, score with tasks and estimate with the policy"),
    ("runtime", "the loop and its executors put all of the above together"),
    ("sweeps", "a sweep runs many runs through the runtime"),
    ("jobs", "Ray Jobs submit runs and sweeps to a cluster"),
    ("cli", "the command line drives everything"),
)
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}
TOP_LEVEL_MODULES: set[str] = set()  # .py files kept directly in platform/ on purpose: none
DASHBOARDS_MAY_IMPORT = {"core", "store"}  # dashboards read the store; the CLI (top) serves them


def module_name(path: Path, root: Path, prefix: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([prefix, *parts])


def read_sources(root: Path, prefix: str) -> dict[str, tuple[str, bool]]:
    """module name -> (source, is a package's __init__) for every .py under `root`."""
    return {
        module_name(p, root, prefix): (p.read_text(encoding="utf-8"), p.name == "__init__.py")
        for p in sorted(root.rglob("*.py"))
        if "__pycache__" not in p.parts
    }


def imports(name: str, source: str, is_package: bool, known: set[str]) -> list[tuple[int, str]]:
    """(line, target) for every import of a dibs.platform module in `source`, at any depth. `from P import x`
    targets P.x when that is a module (a submodule import), else P itself."""
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known]
            found += [(node.lineno, t) for t in subs] or [(node.lineno, base)]
    return [(line, t) for line, t in found if t == PREFIX or t.startswith(PREFIX + ".")]


def subpackage(module: str) -> str | None:
    rest = module[len(PREFIX) + 1 :].split(".") if module.startswith(PREFIX + ".") else []
    return rest[0] if len(rest) > 1 or rest and rest[0] in RANK else None


def graph(sources: dict[str, tuple[str, bool]]) -> dict[str, list[tuple[int, str]]]:
    known = set(sources)
    return {name: imports(name, src, pkg, known) for name, (src, pkg) in sources.items()}


def layer_violations(edges: dict[str, list[tuple[int, str]]]) -> list[str]:
    bad = []
    for src, targets in sorted(edges.items()):
        here = subpackage(src)
        if here not in RANK:
            bad.append(f"{src}: not in a subpackage of LAYERS ({here or 'platform/ itself'})")
            continue
        for line, dst in targets:
            there = subpackage(dst)
            if there not in RANK:
                bad.append(f"{src}:{line}: imports {dst}, which is no module of a layer")
            elif RANK[there] > RANK[here]:
                bad.append(f"{src}:{line}: imports {dst} (layer {there} is above {here})")
    return bad


def find_cycle(edges: dict[str, list[tuple[int, str]]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for start in sorted(edges):
        if state.get(start):
            continue
        path, stack = [start], [iter(sorted({t for _, t in edges[start]}))]
        state[start] = 1
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            elif nxt in edges and not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append(iter(sorted({t for _, t in edges[nxt]})))
    return None


@pytest.fixture(scope="module")
def platform_graph():
    return graph(read_sources(PLATFORM, PREFIX))


def test_no_module_imports_a_higher_layer(platform_graph):
    assert layer_violations(platform_graph) == []


def test_the_module_import_graph_has_no_cycle(platform_graph):
    assert find_cycle(platform_graph) is None, f"import cycle: {' -> '.join(find_cycle(platform_graph))}"


def test_platform_is_subpackages_with_init_and_no_init_of_its_own():
    assert not (PLATFORM / "__init__.py").exists()  # it would shadow the stdlib `platform`
    assert {p.stem for p in PLATFORM.glob("*.py")} == TOP_LEVEL_MODULES
    dirs = {p.parent for p in PLATFORM.rglob("*.py") if "__pycache__" not in p.parts} - {PLATFORM}
    assert sorted(str(d.relative_to(PLATFORM)) for d in dirs if not (d / "__init__.py").is_file()) == []
    assert {p.name for p in PLATFORM.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(RANK)


def test_every_subpackage_is_listed_in_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    dirs = {p.parent for p in PLATFORM.rglob("__init__.py")}
    missing = [module_name(d / "__init__.py", PLATFORM, PREFIX) for d in sorted(dirs)]
    assert [m for m in missing if f'"{m}"' not in text] == []


def test_dashboards_import_only_the_bottom_layers():
    edges = graph(read_sources(ROOT / "dashboards", "dibs.dashboards") | read_sources(PLATFORM, PREFIX))
    used = {
        (src, line, dst) for src, ts in edges.items() if src.startswith("dibs.dashboards") for line, dst in ts
    }
    assert used, "the check found no dashboards import of dibs.platform at all"
    assert (
        sorted(f"{s}:{line}: {d}" for s, line, d in used if subpackage(d) not in DASHBOARDS_MAY_IMPORT) == []
    )


# The checker itself must be able to fail.
def _planted(**modules: str) -> dict[str, list[tuple[int, str]]]:
    """In-memory modules: `learn__a` is dibs.platform.learn.a, `learn__init` the package learn itself."""
    sources = {
        f"{PREFIX}.{k.removesuffix('__init').replace('__', '.')}": (v, k.endswith("__init"))
        for k, v in modules.items()
    }
    return graph(sources)


def test_checker_catches_an_upward_import_at_any_depth_and_relative():
    edges = _planted(
        core__config="def f():\n    from dibs.platform.cli.main import main\n",
        core__metrics="from ..learn import model\n",
        core__flops="from . import config\n",
        cli__main="",
        learn__model="",
    )
    assert layer_violations(edges) == [
        f"{PREFIX}.core.config:2: imports {PREFIX}.cli.main (layer cli is above core)",
        f"{PREFIX}.core.metrics:1: imports {PREFIX}.learn.model (layer learn is above core)",
    ]


def test_checker_catches_a_flat_module_and_an_unknown_layer():
    edges = _planted(core__config="import dibs.platform.loop\n", loop="", extra__x="")
    assert layer_violations(edges) == [
        f"{PREFIX}.core.config:1: imports {PREFIX}.loop, which is no module of a layer",
        f"{PREFIX}.extra.x: not in a subpackage of LAYERS (extra)",
        f"{PREFIX}.loop: not in a subpackage of LAYERS (platform/ itself)",
    ]


def test_checker_reports_a_cycle_hidden_in_a_function():
    edges = _planted(
        learn__a="from dibs.platform.learn import b\n",
        learn__b="def f():\n    from .c import x\n",
        learn__c="import dibs.platform.learn.a\n",
        learn__d="from dibs.platform.learn import a\n",
    )
    assert layer_violations(edges) == []
    assert find_cycle(edges) == [f"{PREFIX}.learn.{m}" for m in "abca"]
    # A package whose __init__ imports a module that imports the package back is a cycle too.
    package = _planted(
        learn__init="from .a import run\n", learn__a="from dibs.platform.learn import helper\n"
    )
    assert find_cycle(package) == [f"{PREFIX}.learn", f"{PREFIX}.learn.a", f"{PREFIX}.learn"]
    assert find_cycle(_planted(learn__init="", learn__a="from . import b\n", learn__b="")) is None
