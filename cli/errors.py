"""How `supo-cli` reports a failure: bad input as one line (exit 2), a runtime failure with its cause first (exit 1).

Bad input (config, data, preflight) is found before any work starts and named in one ``error: ...`` line. Anything that
still fails inside vLLM, Ray or torch is reported as one line naming the command, the actor or file involved when
known, and the innermost error of the exception chain (what actually went wrong, not the wrapper that re-raised it);
the full traceback goes to ``logs/supo-<command>-<timestamp>.log``, whose path the line ends with. ``supo-cli --debug``
prints the traceback inline instead.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import traceback
from pathlib import Path

EXIT_INPUT = 2
EXIT_RUNTIME = 1
LOG_DIR = Path("logs")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def exception_chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and what caused it, outermost first: ``__cause__``, else ``__context__`` (unless suppressed), and a Ray
    task error's ``cause`` (the exception raised inside the actor)."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        chain.append(cur)
        seen.add(id(cur))
        remote = getattr(cur, "cause", None)
        if isinstance(remote, BaseException) and _is_ray_task_error(cur):
            cur = remote
        elif cur.__cause__ is not None:
            cur = cur.__cause__
        elif cur.__context__ is not None and not cur.__suppress_context__:
            cur = cur.__context__
        else:
            cur = None
    return chain


def _is_ray_task_error(exc: BaseException) -> bool:
    return any(c.__name__ == "RayTaskError" for c in type(exc).__mro__)


def _is_ray_actor_error(exc: BaseException) -> bool:
    return any(c.__name__ == "RayActorError" for c in type(exc).__mro__)


def _ray_origin(exc: BaseException) -> tuple[str | None, str | None]:
    """(actor repr, function) of a Ray task error: its attributes, or — for the instance Ray re-raises, which also
    subclasses the cause and keeps only the message — the message's first line ``ray::Fn() (…, repr=Actor)``."""
    actor, fn = getattr(exc, "actor_repr", None), getattr(exc, "function_name", None)
    if actor or fn:
        return actor, fn
    lines = str(exc).splitlines()
    first = _ANSI.sub("", lines[0]) if lines else ""
    m_fn, m_actor = re.match(r"ray::(\S+?)\(\)", first), re.search(r"repr=(.*)\)\s*$", first)
    return (m_actor.group(1) if m_actor else None), (m_fn.group(1) if m_fn else None)


def involved(chain: list[BaseException]) -> str | None:
    """The actor, task, file or step a failure happened in, when the chain says so: a Ray actor's repr or a task's
    function, a dead actor's id, a file an OSError names, or a note a command attached (``exc.add_note``)."""
    parts: list[str] = []
    for e in chain:
        if _is_ray_task_error(e):
            actor, fn = _ray_origin(e)
            if actor or fn:
                parts.append(f"Ray actor {actor}" + (f" ({fn})" if fn else "") if actor else f"Ray task {fn}")
            break
        if _is_ray_actor_error(e):
            actor_id = getattr(e, "actor_id", None)
            parts.append(f"Ray actor {actor_id} (died)" if actor_id else "a Ray actor (died)")
            break
    for e in chain:
        notes = getattr(e, "__notes__", None)
        if notes:
            parts.append(str(notes[-1]))
            break
    inner = chain[-1]
    if isinstance(inner, OSError) and inner.filename:
        parts.append(str(inner.filename))
    return ", ".join(parts) or None


def _message(exc: BaseException) -> str:
    """The first non-empty line of an exception's message; for a Ray task error without a cause, the last line of
    its remote traceback (the error raised in the actor)."""
    lines = str(exc).splitlines()
    if _is_ray_task_error(exc) and getattr(exc, "traceback_str", None):
        lines = list(reversed(str(exc.traceback_str).splitlines()))
    for line in lines:
        if line.strip():
            return line.strip()[:400]
    return "(no message)"


def summary_line(command: str, exc: BaseException) -> str:
    """One line: ``supo-cli <command> failed [in <where>]: <innermost type>: <its message>``."""
    chain = exception_chain(exc)
    inner = chain[-1]
    where = involved(chain)
    return (f"supo-cli {command} failed" + (f" in {where}" if where else "")
            + f": {type(inner).__name__}: {_message(inner)}")


def write_log(command: str, exc: BaseException, log_dir: str | Path = LOG_DIR) -> Path:
    """Write the command line, the summary and the full traceback (every chained exception, notes included) to a new
    ``<log_dir>/supo-<command>-<timestamp>.log``; returns its path."""
    folder = Path(log_dir)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = folder / f"supo-{command}-{stamp}.log"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"supo-{command}-{stamp}-{n}.log"
    text = "".join(traceback.format_exception(exc))
    path.write_text(f"$ supo-cli {' '.join(sys.argv[1:])}\ncwd: {os.getcwd()}\n{summary_line(command, exc)}\n\n{text}")
    return path


def report_runtime_failure(command: str, exc: BaseException, debug: bool, echo) -> int:
    """Report a runtime failure through ``echo(text)`` (stderr): the traceback inline with ``debug``, else the summary
    line and the log file's path. Returns the exit code (1)."""
    if debug:
        echo("".join(traceback.format_exception(exc)).rstrip())
        echo(f"error: {summary_line(command, exc)}")
        return EXIT_RUNTIME
    try:
        where = f"full traceback: {write_log(command, exc)}"
    except OSError as e:  # an unwritable log folder must not hide the failure itself
        where = f"no log written ({e}); rerun with --debug for the traceback"
    echo(f"error: {summary_line(command, exc)} ({where})")
    return EXIT_RUNTIME


@contextlib.contextmanager
def involving(what: str):
    """Attach ``what`` (the checkpoint, arm or file the block works on) as a note to an exception escaping the block,
    so the one-line report of a runtime failure names it."""
    try:
        yield
    except Exception as e:
        e.add_note(what)
        raise
