"""Worker processes for release cells: one-off (`spawn_worker`) or serving a whole release (`WorkerPool`).

Both run ``python -m compiler.release.worker`` and answer with an exit status: 0 when the cell's
results were written, a negative signal number when the worker died (a segfault, a kill, the
timeout), so that a crash is reported in its cell and the release goes on.
"""

from __future__ import annotations

import queue
import select
import subprocess
import sys
import threading
from pathlib import Path
from typing import Callable

from compiler.release.worker import DONE, READY

#: runs one cell's worker: (request file, log file, timeout in seconds) -> exit status
Spawn = Callable[[Path, Path, float], int]


def spawn_worker(request: Path, log: Path, timeout_s: float) -> int:
    """One cell in a fresh process (used for one-off builds; `WorkerPool` serves a whole release)."""
    with log.open("w") as handle:
        try:
            done = subprocess.run([sys.executable, "-m", "compiler.release.worker", str(request)],
                                  stdout=handle, stderr=subprocess.STDOUT, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            handle.write(f"\nchipfit release: the worker ran past {timeout_s:.0f} s and was killed\n")
            return -9
    return done.returncode


class _Worker:
    """A serving worker process: request paths in on stdin, one answer line per cell out."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "compiler.release.worker", "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)
        self.cells = 0

    def _answer(self, timeout_s: float) -> str | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        return self.proc.stdout.readline().strip() if ready else None

    def run(self, request: Path, log: Path, timeout_s: float) -> int:
        if self.cells == 0 and self._answer(120.0) != READY:
            self.stop()
            return self.proc.returncode or -1
        self.cells += 1
        try:
            self.proc.stdin.write(f"{request}\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            return self.proc.wait()
        answer = self._answer(timeout_s)
        if answer == DONE:
            return 0
        if answer is None:
            with log.open("a") as handle:
                handle.write(f"\nchipfit release: the worker ran past {timeout_s:.0f} s and was killed\n")
            self.stop()
            return -9
        return self.proc.wait()  # end of output: the worker died mid-cell

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.stop()


class WorkerPool:
    """Up to ``size`` serving workers; a worker that crashes is replaced for the next cell.

    A worker is retired after ``max_cells`` cells so a slow leak in a toolchain cannot grow unbounded.
    """

    def __init__(self, size: int, max_cells: int = 16) -> None:
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # started on first use
        self._all: list[_Worker] = []
        self._lock = threading.Lock()
        self.max_cells = max_cells

    def __call__(self, request: Path, log: Path, timeout_s: float) -> int:
        worker = self._idle.get()
        try:
            if worker is None or worker.proc.poll() is not None or worker.cells >= self.max_cells:
                if worker is not None:
                    worker.close()
                worker = _Worker()
                with self._lock:
                    self._all.append(worker)
            code = worker.run(request, log, timeout_s)
            if code != 0:
                worker.stop()
                worker = None
            return code
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.close()

    def kill(self) -> None:
        with self._lock:
            for worker in self._all:
                worker.stop()
