"""A run's output directory: one writer at a time, no silent overwrite, a graceful stop on SIGINT / SIGTERM.

``fluxlab optimize | cmaes | train`` write into ``--out``. While a :class:`RunDirectory` is open:

* it holds an exclusive ``fcntl.flock`` on ``OUT/run.lock`` (the kernel releases it when the process
  ends, however it ends, so a killed run never leaves a stale lock); a second run into the same
  directory is refused with the first one's process id;
* a directory that already holds a run's files is refused unless the run resumes it (``--resume``)
  or replaces it (``--overwrite``, which first deletes the files of :data:`OUTPUT_FILES`);
* the first SIGINT or SIGTERM only sets :attr:`RunDirectory.stop_requested`: the search finishes
  its current iteration, saves the best result so far and writes its summary with
  ``"interrupted": true``; a second signal stops at once (``KeyboardInterrupt`` for SIGINT, the
  default action for SIGTERM);
* :meth:`RunDirectory.note` appends a timestamped line to ``OUT/run.log`` (start, resume, stop).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import sys
import time
from pathlib import Path

LOCK_NAME = "run.lock"
#: Files (and the ``tb`` folder) that runs write; their presence means a directory holds a run.
OUTPUT_FILES = (
    "summary.json",
    "log.csv",
    "loss.png",
    "best.npz",
    "best.mp4",
    "best.gif",
    "checkpoint.pt",
    "checkpoint.npz",
    "model.zip",
    "model.json",
    "best_model.zip",
    "best_model.json",
    "evaluations.npz",
    "train.monitor.csv",
    "eval.monitor.csv",
    "learning_curve.png",
    "run.log",
    "tb",
)
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunDirectoryError(ValueError):
    """The output directory cannot be used: not writable, in use by another run, or it holds a run
    that was neither resumed nor to be overwritten."""


class RunDirectory:
    """Exclusive use of a run's output directory, and stop requests from signals (module docstring).

    Args:
        path: the directory (created with its parents).
        resume: the run continues the one the directory holds (it must hold one).
        overwrite: delete the files of a previous run first.

    Use it as a context manager; :meth:`open` raises :class:`RunDirectoryError` naming the
    directory before anything is simulated.
    """

    def __init__(self, path: str | Path, *, resume: bool = False, overwrite: bool = False):
        if resume and overwrite:
            raise RunDirectoryError("--resume and --overwrite exclude each other")
        self.path = Path(path)
        self.resume, self.overwrite = bool(resume), bool(overwrite)
        self.stop_requested = False
        self.signal_name: str | None = None
        self._fd: int | None = None
        self._previous: dict[int, object] = {}

    # ------------------------------------------------------------------ life cycle
    def open(self) -> RunDirectory:
        path = self.path
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunDirectoryError(f"cannot create the output directory {path}: {err.strerror or err}") from None
        if not path.is_dir() or not os.access(path, os.W_OK | os.X_OK):
            raise RunDirectoryError(f"the output directory {path} is not a writable directory")
        fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirectoryError(
                f"{path} is in use by another fluxlab run (pid {owner}); wait for it to end or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        existing = [name for name in OUTPUT_FILES if (path / name).exists()]
        try:
            if self.resume and not existing:
                raise RunDirectoryError(f"--resume: {path} holds no run to resume")
            if existing and not (self.resume or self.overwrite):
                raise RunDirectoryError(
                    f"{path} already holds a run ({', '.join(existing)}); pass --resume to continue it or "
                    "--overwrite to replace it"
                )
        except RunDirectoryError:
            self._unlock()
            raise
        if self.overwrite:
            for name in existing:
                target = path / name
                shutil.rmtree(target) if target.is_dir() else target.unlink()
        self._install()
        return self

    def close(self) -> None:
        self._restore()
        self._unlock()

    def __enter__(self) -> RunDirectory:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _unlock(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def note(self, message: str) -> None:
        """Append ``message`` with the local time to ``run.log``."""
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        with open(self.path / "run.log", "a") as f:
            f.write(f"{stamp} {message}\n")

    # ------------------------------------------------------------------ signals
    def should_stop(self) -> bool:
        """True once SIGINT or SIGTERM arrived (the search should stop after this iteration)."""
        return self.stop_requested

    def _install(self) -> None:
        for sig in _SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals stay as they are
                return

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.stop_requested:
            self._restore()
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.stop_requested, self.signal_name = True, name
        print(
            f"fluxlab: {name} received; finishing the current iteration and saving the best result "
            f"(send {name} again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
