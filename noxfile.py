"""Task runner for the three packages: tests, lint, typecheck, demo, bench.

`nox -s tests` is the command the README and CI run. Sessions use uv where it is
installed and fall back to virtualenv + pip where it is not.
"""

from __future__ import annotations

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


@nox.session
def demo(session: nox.Session) -> None:
    """Generate plates, start a loopback server, compile and run them with live progress."""
    _install_packages(session)
    session.run("python", "-m", "openhcs_workflow", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks as ratios against baselines measured in the same run (`-- --quick`)."""
    _install_packages(session)
    session.run("python", "-m", "bench", *session.posargs, env={"PYTHONPATH": os.getcwd()})
