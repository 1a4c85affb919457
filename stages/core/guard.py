"""One trainer per run, and none outliving the dvc that started it.

`train_guard(run)` wraps a whole train step:
* it holds an exclusive, non-blocking lock on `.checkpoints/<run>.lock`, which
  names its owner's PID, so a second trainer of the same run stops at once
  saying which process has it (two would write the same checkpoint and outputs);
* on Linux, a watchdog thread stops the trainer when any process that started
  it (dvc, and the shell dvc runs the command in; not the terminal or nohup
  that started dvc) has exited, plus
  PR_SET_PDEATHSIG as the fast path, so an orphan never keeps writing models/
  beside a newer run. It exits with STOPPED_EXIT_CODE and writes no model.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple, Self

from stages.core.errors import StageError

STOPPED_EXIT_CODE = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


class TrainingLocked(StageError):
    """Another trainer of the same run holds its lock."""


class TrainerStopped(BaseException):
    """Raised in the main thread to stop a trainer (BaseException: nothing on the way catches it)."""


class _Proc(NamedTuple):
    pid: int
    name: str
    state: str
    ppid: int
    start: int  # clock ticks after boot: tells a process from a later one that reuses its PID


def _proc(pid: int) -> _Proc | None:
    """One process's /proc/<pid>/stat, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name_end = text.rindex(")")  # the name may itself hold spaces and parentheses
    fields = text[name_end + 2 :].split()
    return _Proc(pid, text[text.index("(") + 1 : name_end], fields[0], int(fields[1]), int(fields[19]))


SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "mksh", "fish", "busybox"})


def _ancestors() -> list[_Proc]:
    """The processes that started this one: the shells above it, up to and including the first program that is
    not a shell (dvc, or whatever launched the step), never PID 1.

    Not what started that program: `nohup make repro &` from a terminal that
    then closes, or a tmux pane's shell, must not stop training that dvc still runs.
    """
    chain, pid = [], os.getppid()
    while pid > 1 and (proc := _proc(pid)) is not None:
        chain.append(proc)
        if proc.name not in SHELLS:
            break
        pid = proc.ppid
    return chain


def _exited(proc: _Proc) -> bool:
    now = _proc(proc.pid)
    return now is None or now.start != proc.start or now.state in ("Z", "X")  # gone, reused, or a zombie


class _Watchdog:
    """Stops the trainer once any process that started it has exited (Linux; elsewhere it does nothing).

    A daemon thread polls the ancestors recorded at start; on the first one
    gone it sends SIGTERM to the main thread, whose handler raises
    TrainerStopped there. prctl(PR_SET_PDEATHSIG) makes the kernel send the
    same SIGTERM the moment the parent dies. Should the main thread not reach
    Python code within `grace` seconds (stuck in a long native call), the
    thread ends the process itself.
    """

    def __init__(self, stage: str, interval: float = 0.25, grace: float = 5.0):
        self.stage, self.interval, self.grace = stage, interval, grace
        self.enabled = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
        self.ancestors: list[_Proc] = []
        self.reason: str | None = None
        self._done = threading.Event()
        self._previous_handler: Any = None

    def __enter__(self) -> Self:
        if not self.enabled:
            return self
        self.ancestors = _ancestors()
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        _set_parent_death_signal(signal.SIGTERM)
        threading.Thread(target=self._poll, name=f"{self.stage} watchdog", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        self._done.set()
        _set_parent_death_signal(0)
        signal.signal(signal.SIGTERM, self._previous_handler)

    def why_stop(self) -> str:
        if self.reason is None:
            gone = next((p for p in self.ancestors if _exited(p)), None)
            self.reason = (
                f"the process that started it, {gone.name} (PID {gone.pid}), has exited" if gone else "it received SIGTERM"
            )
        return self.reason

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        if self._done.is_set():  # the step is over; leave as SIGTERM would have
            stop_now(self.stage, self.why_stop())
        raise TrainerStopped(self.why_stop())

    def _poll(self) -> None:
        while not self._done.wait(self.interval):
            if any(_exited(p) for p in self.ancestors):
                self.why_stop()
                signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)
                if not self._done.wait(self.grace):
                    stop_now(self.stage, self.why_stop())
                return


def _set_parent_death_signal(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG): the kernel sends `signum` when the parent exits (0 turns it off)."""
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # the watchdog's polling still covers it


def stop_now(stage: str, why: str) -> None:
    """Say why in one line and end the process at once, without writing anything more."""
    print(
        f"{stage}: stopping because {why}; models/ was not written. Re-run it to train again (it resumes "
        "from the last checkpoint if one is left and nothing it depends on changed).",
        file=sys.stderr,
        flush=True,
    )
    sys.stdout.flush()
    os._exit(STOPPED_EXIT_CODE)


@contextlib.contextmanager
def _run_lock(run) -> Iterator[None]:
    """Hold `.checkpoints/<run>.lock` exclusively, or raise TrainingLocked naming the holder's PID."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        yield
        return
    path = Path(f"{run.paths.checkpoints}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _lock_owner(fd)
            raise TrainingLocked(
                f"train@{run.paths.key} is already running in process {owner} (it holds {path}); two trainers "
                f"of one run would write the same checkpoint and outputs. Wait for it to finish, or stop it "
                f"(kill {owner}), then run this again."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        _held_locks.add(run.paths.key)
        try:
            yield
        finally:
            _held_locks.discard(run.paths.key)
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would race a newcomer)


_held_locks: set[str] = set()


def _lock_owner(fd: int) -> str:
    for _ in range(20):  # the holder writes its PID just after taking the lock
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if text:
            return text
        time.sleep(0.05)
    return "(unknown PID)"


@contextlib.contextmanager
def train_guard(run) -> Iterator[None]:
    """Wrap a whole train step: the run's exclusive lock, and the watchdog against orphaned trainers.

    A trainer stopped by the watchdog or SIGTERM prints one line and exits with
    STOPPED_EXIT_CODE; atomic writes clean up on the way out, so models/<run>
    is never left half-written. Its last checkpoint stays for a re-run.
    """
    stage = f"train@{run.paths.key}"
    with _run_lock(run), _Watchdog(stage) as watchdog:
        try:
            yield
        except TrainerStopped:
            stop_now(stage, watchdog.why_stop())


def holds(run_key: str) -> bool:
    """Whether this process holds the train lock of `run_key` (fit refuses to run without it)."""
    return run_key in _held_locks
