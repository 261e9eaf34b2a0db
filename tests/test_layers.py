"""The package's imports point one way: each module imports only from its own layer or lower
ones, and no chain of imports comes back to where it started."""

import ast
from pathlib import Path

import likex

PACKAGE = Path(likex.__file__).parent
# Every module's floor, lowest first: a module may import only from floors below its own (or
# its own floor, where several modules share one). A module takes the floor of the most
# specific entry that names it or a package above it ("models.start", else "models").
LAYERS = [
    ("errors",), ("io",), ("options",), ("schema",), ("clock",), ("interrupt",), ("device",),
    ("distributed",), ("stats",),
    # the model interface and its two kinds; where training starts
    ("models",), ("models.gpt", "models.named", "models.tokenizer", "models.tree"),
    ("models.hf", "models.prefix"),
    ("models.adapter",), ("models.checkpoint",), ("models.cache",), ("models.start",),
    # what training pulls toward
    ("words",), ("word_target",), ("target",), ("loss",), ("objective",),
    # contexts, sampling, training
    ("data",), ("corpora",), ("accel",), ("generate",), ("throughput",), ("train_config",),
    ("batches",), ("train",),
    ("measurement", "measurement.words"), ("measurement.scores",), ("measurement.memo",),
    ("measurement.rates",),
    ("measurement.evaluation",),
    ("estimate",),
    ("audit",),
    ("config_audit",), ("plans",), ("config",), ("runs",), ("run_results",), ("results",),
    # the zoo: its texts, folder and power; the draw; manifests and verdicts; building and
    # what detectors see; the detectors and the scoring; the commands and results
    ("zoo", "zoo.texts", "zoo.folder", "zoo.power"), ("zoo.draw",),
    ("zoo.manifest", "zoo.verdicts"), ("zoo.organisms", "zoo.suspects"),
    ("zoo.detectors", "zoo.baselines", "zoo.scoring"), ("zoo.results", "zoo.commands"),
    ("report",),
    ("pipelines",), ("pipelines.training",),
    ("pipelines.plant", "pipelines.pretrain", "pipelines.persist"),
    ("pipelines.run",), ("pipelines.sweep",),
    ("cli", "__main__", "__init__"),
]  # fmt: skip


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def _layer(module: str) -> int:
    """The floor of the most specific entry naming ``module`` or a package above it."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        for i, names in enumerate(LAYERS):
            if prefix in names:
                return i
    raise StopIteration(module)


def _imports(path: Path) -> set[str]:
    """Every likex module ``path`` imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("likex"):
            base = node.module.removeprefix("likex").lstrip(".")
            for alias in node.names:  # "from likex.models import gpt" imports a module
                sub = f"{base}.{alias.name}" if base else alias.name
                where = PACKAGE / sub.replace(".", "/")
                found.add(sub if where.is_dir() or where.with_suffix(".py").is_file() else base)
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("likex.") for a in node.names if a.name.startswith("likex.")
            }
    return {m for m in found if m}


def _graph() -> dict[str, set[str]]:
    modules = {_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: {i for i in _imports(p) if i != m} for m, p in modules.items() if m != "__init__"}


def _upward(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} (layer {_layer(m)}) imports {i} (layer {_layer(i)})"
        for m, imported in sorted(graph.items())
        for i in sorted(imported)
        if _layer(i) > _layer(m)
    ]


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    state: dict[str, str] = {}
    found: list[str] = []

    def visit(m: str, stack: list[str]) -> None:
        state[m] = "open"
        for i in sorted(graph.get(m, ())):
            if state.get(i) == "open":
                found.append(" -> ".join(stack[stack.index(i) :] + [i]))
            elif i not in state:
                visit(i, [*stack, i])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)  # StopIteration: a new top-level module needs a place in LAYERS


def test_no_import_points_up():
    assert _upward(_graph()) == []


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path, monkeypatch):
    """The walker and the checks themselves, on two modules that import each other."""
    (tmp_path / "stats.py").write_text("from likex.report.run import x\n")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "run.py").write_text("def f():\n    from likex import stats\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", tmp_path)
    graph = _graph()
    assert graph == {"stats": {"report.run"}, "report.run": {"stats"}}
    assert _upward(graph) == [
        f"stats (layer {_layer('stats')}) imports report.run (layer {_layer('report')})"
    ]
    assert _cycles(graph) == ["report.run -> stats -> report.run"]


def test_floors_are_per_module_and_packages_have_inner_floors():
    """Distinct modules are distinct floors (an import between two low modules is checked,
    not only a cycle), and inside a package a listed module has its own floor."""
    assert _layer("errors") < _layer("io") < _layer("models") < _layer("objective")
    assert _layer("models.gpt") < _layer("models.checkpoint") < _layer("models.start")
    assert _layer("pipelines.training") < _layer("pipelines.run") < _layer("pipelines.sweep")
    assert _layer("audit.white_box") == _layer("audit")  # unlisted: its package's floor
    assert _layer("zoo.draw") < _layer("zoo.organisms") < _layer("zoo.commands")
    assert _layer("zoo.verdicts") < _layer("zoo.detectors") < _layer("report.zoo")
    graph = {"models.gpt": {"models.start"}, "errors": {"io"}}
    assert _upward(graph) == [
        f"errors (layer {_layer('errors')}) imports io (layer {_layer('io')})",
        f"models.gpt (layer {_layer('models.gpt')}) imports models.start "
        f"(layer {_layer('models.start')})",
    ]
