"""A subprocess sandbox for untrusted environment code (CodeGym's ``gym_env`` classes).

One :class:`Sandbox` is one child process, started for one episode and kept for the whole episode. Parent and child
talk over pipes in JSON lines, one request and one response at a time. What the child gets:

* ``python -I`` (isolated: no ``PYTHON*`` variables, no user site, no script directory on ``sys.path``) started with a
  minimal environment — ``PATH``, ``LANG``, ``HOME``/``TMPDIR`` pointing at its own throw-away working directory
  (a fresh temporary directory, removed when the sandbox closes) — so no inherited secrets and no proxies;
* resource limits it sets on itself before it reads any untrusted code: ``RLIMIT_AS`` (address space,
  ``memory_mb``), ``RLIMIT_CPU`` (a back-stop for an orphaned child), ``RLIMIT_FSIZE`` (files it may write),
  ``RLIMIT_CORE`` 0 and ``RLIMIT_NPROC`` 0 (no new processes, for a non-root user);
* a wall-time limit per request, enforced by the parent: past ``seconds`` the child's process group is killed;
* no network: a private network namespace (``unshare -rn``) where the system allows one (checked once per process),
  and in every case ``socket`` (and ``_socket``) patched to refuse, plus ``os.system``/``fork``/``exec*``/
  ``subprocess`` patched to refuse, before the untrusted code is imported;
* a stand-in ``gymnasium`` module (``Env`` and ``spaces`` stubs), so CodeGym classes import without gymnasium.

Honest limits: the in-process patches stop ordinary library calls, not a determined attacker (``ctypes`` can still
call libc). Without a network namespace (no ``unshare`` or unprivileged user namespaces disabled) the network block
is only those patches. Running as root, the child could raise its own hard limits and ``RLIMIT_NPROC`` does not
apply. There is no filesystem isolation beyond the working directory: the child can read whatever the user can.
Run untrusted data in a container or VM for real isolation.

Costs (measured on a 2-core box): a child starts in ~25–50 ms and holds ~14 MB resident, so a batch of B live rollouts
holds B small processes; a normal call round-trips in well under a millisecond. The agent loop steps environments one
after another, so a call that times out stalls the batch for up to ``seconds``.

A memory overrun shows up either as an uncaught ``MemoryError`` or — since CodeGym's ``step`` catches every
``Exception`` — as a peak resident set (``VmHWM``) above :data:`MEMORY_FAIL_FRACTION` of the limit after a call; both
end the episode as failed. A single huge allocation the kernel refuses outright leaves the process small and shows
only as the environment's own ``Error:`` message.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from supo.envs.sandbox_child import CHILD_SOURCE

MEMORY_FAIL_FRACTION = 0.8
MAX_RESPONSE_BYTES = 1 << 20
STDERR_TAIL = 400


class SandboxError(RuntimeError):
    """The sandboxed process failed; ``reason`` is one of timeout, memory, crash, protocol, start."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class SandboxLimits:
    seconds: float = 10.0  # wall time of one request
    memory_mb: int = 512  # RLIMIT_AS of the child
    network_namespace: bool = True  # use `unshare -rn` when it works
    max_obs_chars: int = 65536  # observations are cut to this many characters in the child
    file_mb: int = 16  # RLIMIT_FSIZE

    def cpu_seconds(self) -> int:
        # Back-stop only: per-request wall time is the real limit; this stops a child spinning after its parent died.
        return int(max(60.0, 64 * self.seconds))


@lru_cache(maxsize=1)
def network_namespace_available() -> bool:
    """True when ``unshare -rn`` can start a process in a private network namespace here (checked once)."""
    exe = shutil.which("unshare")
    if exe is None or not sys.platform.startswith("linux"):
        return False
    try:
        r = subprocess.run([exe, "-rn", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=10, env={"PATH": os.defpath})
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0




def _kill(proc: subprocess.Popen | None, workdir: str | None) -> None:
    if proc is not None and proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, OSError):
            try:
                proc.kill()
            except OSError:
                pass
    if proc is not None:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (proc.stdin, proc.stdout):
            try:
                if f is not None:
                    f.close()
            except OSError:
                pass
    if workdir:
        shutil.rmtree(workdir, ignore_errors=True)


class Sandbox:
    """One child process running untrusted environment code; see the module docstring for what it is allowed."""

    def __init__(self, limits: SandboxLimits) -> None:
        self.limits = limits
        self.proc: subprocess.Popen | None = None
        self.workdir: str | None = None
        self.uses_netns = False
        self._buf = b""
        self._stderr = None
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the child (returns at once; the child's start-up overlaps with whatever the caller does next)."""
        if self.proc is not None:
            raise RuntimeError("sandbox already started")
        self.workdir = tempfile.mkdtemp(prefix="supo-sandbox-")
        lim = {"memory_mb": self.limits.memory_mb, "file_mb": self.limits.file_mb,
               "cpu_seconds": self.limits.cpu_seconds(), "max_obs_chars": self.limits.max_obs_chars,
               "mem_fraction": MEMORY_FAIL_FRACTION}
        cmd = [sys.executable, "-I", "-c", CHILD_SOURCE, json.dumps(lim)]
        if self.limits.network_namespace and network_namespace_available():
            cmd = [shutil.which("unshare") or "unshare", "-rn", *cmd]
            self.uses_netns = True
        env = {"PATH": os.defpath, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "HOME": self.workdir,
               "TMPDIR": self.workdir, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        self._stderr = open(Path(self.workdir) / "stderr.log", "wb")
        try:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         cwd=self.workdir, env=env, start_new_session=True, close_fds=True)
        except OSError as e:
            self._stderr.close()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise SandboxError("start", f"could not start the sandbox process: {e}") from None
        finally:
            if self.proc is not None:
                self._stderr.close()
        self._finalizer = weakref.finalize(self, _kill, self.proc, self.workdir)

    def close(self) -> None:
        """Kill the child (if still running) and remove its working directory. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
        elif self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- requests ------------------------------------------------------------------------------------------------------

    def send(self, request: dict[str, Any]) -> None:
        """Write one request line (no wait for the answer; pair with :meth:`receive`)."""
        if self.proc is None or self.proc.stdin is None:
            raise SandboxError("start", "the sandbox is not running")
        data = (json.dumps(request) + "\n").encode("utf-8")
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._failure("crash", "the sandboxed process is gone") from None

    def receive(self, seconds: float | None = None) -> dict[str, Any]:
        """Wait for one response line; raise :class:`SandboxError` (the child killed) on timeout, crash or garbage."""
        seconds = self.limits.seconds if seconds is None else seconds
        deadline = time.monotonic() + seconds
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._failure("timeout", f"the sandboxed environment timed out after {seconds:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise self._failure("crash", self._exit_description())
            self._buf += chunk
            if len(self._buf) > MAX_RESPONSE_BYTES:
                raise self._failure("protocol", "the sandboxed environment sent an oversized response")
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            resp = json.loads(line)
            if not isinstance(resp, dict):
                raise ValueError("not an object")
        except ValueError:
            raise self._failure("protocol", "the sandboxed environment sent a malformed response") from None
        fatal = resp.get("fatal")
        if fatal is not None:
            reason = fatal if fatal in ("memory", "crash", "start") else "crash"
            what = {"memory": f"exceeded its memory limit of {self.limits.memory_mb} MB",
                    "start": "failed to start", "crash": "crashed"}[reason]
            raise self._failure(reason, f"the sandboxed environment {what}: {str(resp.get('error', ''))[:300]}")
        return resp

    def call(self, request: dict[str, Any], seconds: float | None = None) -> dict[str, Any]:
        self.send(request)
        return self.receive(seconds)

    # -- failures ------------------------------------------------------------------------------------------------------

    def _stderr_tail(self) -> str:
        if not self.workdir:
            return ""
        try:
            data = (Path(self.workdir) / "stderr.log").read_bytes()[-STDERR_TAIL:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace").strip()

    def _exit_description(self) -> str:
        code = None
        if self.proc is not None:
            try:
                code = self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                code = None
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}"
            if -code == signal.SIGKILL:
                how += " (out of memory or killed from outside)"
            elif -code == signal.SIGXCPU:
                how += " (CPU-time back-stop)"
        else:
            how = f"exited with code {code}"
        tail = self._stderr_tail()
        return f"the sandboxed environment {how}" + (f"; stderr: {tail[-200:]}" if tail else "")

    def _failure(self, reason: str, message: str) -> SandboxError:
        self.close()
        return SandboxError(reason, message)
