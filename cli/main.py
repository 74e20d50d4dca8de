"""`supo-cli`: prepare → sft → train → eval → report, plus the MLflow UI, the resolved config and model import.

Each command is parse → plan (:mod:`supo.pipeline`) → check every input (:mod:`supo.preflight`) → run; the commands
live in their own modules and register on the app of :mod:`cli.app`. Bad input is one ``error:`` line naming the
file or field, exit code 2; a runtime failure is one line with its cause first and the path of a log holding the
traceback, exit code 1 (``supo-cli --debug`` prints it instead).
"""

from __future__ import annotations

from cli import stages, train, evaluate, report, tools, import_model  # noqa: F401,I001  (registration order = help order)
from cli.app import app

__all__ = ["app"]

if __name__ == "__main__":
    app()
