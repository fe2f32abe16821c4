"""Task runner for the three packages: tests, lint, typecheck, demo, bench.

`nox -s tests` is the command the README and CI run. Sessions use uv where it is
installed and fall back to virtualenv + pip where it is not.
"""

from __future__ import annotations

import glob
import os

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = False

PACKAGES = ("zmqruntime", "reactive_services", "openhcs_workflow")
EDITABLE = [arg for name in PACKAGES for arg in ("-e", f"packages/{name}[test]")]
TEST_DIRS = [f"packages/{name}/tests" for name in PACKAGES]


def _install_packages(session: nox.Session, *extra: str) -> None:
    session.install(*EDITABLE, *extra)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suites of all three packages against real sockets and processes."""
    _install_packages(session)
    args = session.posargs or TEST_DIRS
    env = {"PYTHONFAULTHANDLER": "1"}
    session.run("pytest", *args, env=env)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole repository."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the three packages' sources."""
    _install_packages(session, "mypy>=1.11", "types-psutil")
    session.run("mypy")


def _install_with_extras(session: nox.Session, extras: dict[str, str], *extra: str) -> None:
    """The three packages (editable), each with the given extras (`{"openhcs_workflow": "qt"}`)."""
    packages = [
        f"packages/{name}[{extras[name]}]" if name in extras else f"packages/{name}"
        for name in PACKAGES
    ]
    session.install(*[arg for package in packages for arg in ("-e", package)], *extra)


@nox.session
def demo(session: nox.Session) -> None:
    """Generate plates, start a loopback server, compile and run them with live progress."""
    _install_with_extras(session, {"openhcs_workflow": "images,console"})
    session.run("python", "-m", "openhcs_workflow", "demo", *session.posargs)


@nox.session
def notebook(session: nox.Session) -> None:
    """Execute examples/plate_batch.ipynb headlessly (nbclient) and test the notebook host."""
    _install_with_extras(
        session,
        {name: "test" for name in PACKAGES} | {"openhcs_workflow": "test,notebook"},
        "nbclient>=0.10",
        "nbformat>=5.10",
        "ipykernel>=6.29",
    )
    tests = session.posargs or glob.glob("packages/openhcs_workflow/tests/test_wf_notebook*.py")
    session.run("pytest", *tests, env={"PYTHONFAULTHANDLER": "1", "JUPYTER_PREFER_ENV_PATH": "1"})


@nox.session
def qt(session: nox.Session) -> None:
    """The Qt tests under QT_QPA_PLATFORM=offscreen: QtDispatcher and the Qt example.

    Each package's Qt tests run in a pytest process of their own: reactive_services' need
    only a QGuiApplication, the example's widgets a QApplication, and a process has one.
    """
    _install_with_extras(
        session,
        {name: "test" for name in PACKAGES}
        | {"reactive_services": "test,qt", "openhcs_workflow": "test,qt"},
    )
    env = {"PYTHONFAULTHANDLER": "1", "QT_QPA_PLATFORM": "offscreen"}
    for pattern in (
        "packages/reactive_services/tests/test_rs_qt*.py",
        "packages/openhcs_workflow/tests/test_wf_qt*.py",
    ):
        session.run("pytest", *sorted(glob.glob(pattern)), *session.posargs, env=env)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against peers and limits measured in the same run; writes bench/results.json
    and docs/benchmarks.md (`-- --quick` for a short run, `-- --only NAME ...` for some)."""
    # The peers ours is measured against are dependencies of this session only (not of the
    # packages); py-spy profiles the slow side when a goal is missed.
    peers = ("dask[distributed]>=2024.1", "ipyparallel>=8.6", "psutil>=5.9", "py-spy>=0.3.14")
    _install_packages(session, *peers)
    session.run("python", "-m", "bench", *session.posargs, env={"PYTHONPATH": os.getcwd()})


@nox.session
def faults(session: nox.Session) -> None:
    """Faults, hostile input and scale-out, with real processes (a few minutes): workers and
    servers killed, stopped and restarted, a slow subscriber under 200,000 updates, a fuzzed
    server, the loopback/no-pickle checks, CurveZMQ and the Dask executor."""
    _install_with_extras(session, {name: "test" for name in PACKAGES} | {"zmqruntime": "test,dask"})
    patterns = ("fault_*", "hostile_*", "safety", "curve", "dask")
    tests = session.posargs or [
        *sorted(
            path
            for pattern in patterns
            for path in glob.glob(f"packages/zmqruntime/tests/test_zr_{pattern}.py")
        ),
        "packages/openhcs_workflow/tests/test_wf_dask.py",  # a plate batch on Dask
    ]
    env = {"PYTHONFAULTHANDLER": "1", "ZMQRUNTIME_FAULTS": "1"}
    session.run("pytest", *tests, env=env)
