"""Static and runtime safety: no package deserialises code (no pickle, no eval/exec), and a
server started with its defaults listens on loopback only."""

from __future__ import annotations

import ast
from pathlib import Path

import psutil
import pytest

from zmqruntime.server import start_server_process
from zmqruntime.testing import SAMPLE_HANDLERS

REPO = Path(__file__).resolve().parents[3]
SOURCES = sorted(REPO.glob("packages/*/src/**/*.py"))
#: Modules that turn bytes into objects or code.
FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve"}
#: Builtins that run text as code.
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}


def violations(source: str, filename: str) -> list[str]:
    """Every import of a forbidden module and every call of a forbidden builtin."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module]
        for name in names:
            if name.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{filename}:{node.lineno}: imports {name}")
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else None
            if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_CALLS:
                base = func.value
                if isinstance(base, ast.Name) and base.id == "builtins":
                    called = func.attr
            if called in FORBIDDEN_CALLS:
                found.append(f"{filename}:{node.lineno}: calls {called}()")
    return found


@pytest.mark.parametrize(
    "snippet",
    [
        "import pickle",
        "import cloudpickle as cp",
        "from dill import loads",
        "from pickle import loads as l",
        "import marshal",
        "eval('1')",
        "exec('x = 1')",
        "builtins.exec('x = 1')",
        "compile('1', 'f', 'eval')",
    ],
)
def test_the_scanner_finds_each_forbidden_construct(snippet: str) -> None:
    assert violations(snippet, "sample.py")


def test_the_scanner_leaves_look_alikes_alone() -> None:
    assert not violations("import re\nre.compile('x')\nmodel.eval()\npickled = 1\n", "ok.py")


def test_no_package_imports_pickle_or_runs_code_from_text() -> None:
    assert len(SOURCES) > 30, f"expected the three packages' sources under {REPO}"
    found = [v for path in SOURCES for v in violations(path.read_text(), str(path))]
    assert not found, "\n".join(found)


def test_a_default_server_listens_on_loopback_only() -> None:
    with start_server_process(SAMPLE_HANDLERS, workers=1) as server:
        for endpoint in (server.info.control, server.info.events, server.info.progress):
            assert endpoint.startswith("tcp://127.0.0.1:"), endpoint
        ports = {int(e.rsplit(":", 1)[1]) for e in (server.info.control, server.info.events)}
        ports.add(int(server.info.progress.rsplit(":", 1)[1]))
        process = psutil.Process(server.pid)
        family = [process, *process.children(recursive=True)]
        listening = [
            conn
            for proc in family
            for conn in proc.net_connections(kind="inet")
            if conn.status == psutil.CONN_LISTEN
        ]
        # The three channels of the connection file, and the jobs channel of the server's
        # own workers (docs/protocol.md §7), which is never in it.
        assert ports < {conn.laddr.port for conn in listening}
        assert len(listening) == len(ports) + 1
        assert all(conn.laddr.ip == "127.0.0.1" for conn in listening), listening
