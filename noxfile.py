"""Development sessions: `nox` runs tests, lint and typecheck; `nox -s docs` and `nox -s benchmarks` on demand.

Sessions install torch first, pinned: an unpinned torch lets pip pick the default (CUDA) wheel and its GBs of
nvidia-* packages. Set FASTDIFF_TORCH_INDEX=https://download.pytorch.org/whl/cpu to get the CPU-only wheel
where the default one is CUDA. Reuse environments with `nox -r`; run in the current environment, without
installing anything, with `nox --no-venv`.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]

TORCH = os.environ.get("FASTDIFF_TORCH", "torch==2.13.0")
LINT_PATHS = ["src", "tests", "benchmarks", "docs", "noxfile.py"]


def _install(session: nox.Session, *args: str) -> None:
    """`session.install`, skipped under `--no-venv` (the current environment is used as it is)."""
    if session.venv_backend == "none":
        return
    session.install(*args)


def _install_package(session: nox.Session, extras: str) -> None:
    """Pinned torch first, then the package (editable) with `extras`: pip then keeps that torch."""
    index = os.environ.get("FASTDIFF_TORCH_INDEX")
    _install(session, TORCH, *(["--index-url", index] if index else []))
    _install(session, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (extra arguments go to pytest: `nox -s tests -- -k img2img -x`)."""
    _install_package(session, "dev")
    session.run("pytest", "-n", "2", "--dist", "loadfile", *session.posargs)  # as the README runs it


@nox.session
def lint(session: nox.Session) -> None:
    """Check style and formatting with ruff (no changes are written)."""
    _install(session, "ruff")
    paths = [p for p in LINT_PATHS if Path(p).exists()]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the package with mypy in strict mode."""
    _install_package(session, "dev")
    session.run("mypy", "--strict", "src")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation with `mkdocs build --strict` (`nox -s docs -- serve` to preview it)."""
    _install_package(session, "docs")
    session.run("mkdocs", *(session.posargs or ["build", "--strict"]))


@nox.session(default=False)
def benchmarks(session: nox.Session) -> None:
    """Run the benchmarks in benchmarks/ (not run by default; extra arguments go to pytest)."""
    _install_package(session, "dev,bench")
    session.run("pytest", "benchmarks/", *session.posargs)
