"""Library noise: what the toolchains print is kept off the user's terminal and out of chipfit's output.

Warnings and log records of the libraries chipfit drives (torch, torchao, onnxscript, coremltools, TVM,
transformers) go to a log file when one is given (``chipfit build`` writes ``<out>/chipfit.log``; a release
worker's go to its cell's log), to stderr with ``--verbose``, and nowhere else. torch's own
warnings are lowered to errors through ``TORCH_LOGS`` (read when torch is imported) unless ``--verbose``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Iterator

LIBRARY_LOGGERS = ("torch", "torchao", "coremltools", "onnxscript", "onnx_ir", "tvm", "transformers", "onnxruntime",
                   "executorch", "py.warnings")
SINK = "chipfit.libraries"


def quiet_libraries(verbose: bool = False, log_path: Path | None = None) -> None:
    """Route library warnings and logs to ``log_path`` (and stderr with ``verbose``); call before importing them.

    The log file is opened at its first record, so a command refused before any work writes nothing."""
    # coremltools draws tqdm progress bars for sub-second conversions; chipfit prints its own progress.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning" if verbose else "error")
    if not verbose:
        os.environ.setdefault("TORCH_LOGS", "-all")
    logging.captureWarnings(True)
    handlers: list[logging.Handler] = []
    if log_path is not None:
        handler = _LazyFileHandler(log_path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        handlers.append(handler)
    if verbose:
        handlers.append(logging.StreamHandler())
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers or [logging.NullHandler()]
        logger.propagate = False
        logger.setLevel(logging.INFO if verbose else logging.WARNING)
    warnings.simplefilter("default")  # every warning once per place, through the logging above


class _LazyFileHandler(logging.FileHandler):
    """A file handler that creates its folder and file only when the first record arrives."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, delay=True)

    def _open(self):
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


@contextlib.contextmanager
def native_stderr_to(log_path: Path | None, verbose: bool = False) -> Iterator[None]:
    """Keep what native code (TVM's and ONNX Runtime's C++ logging) writes to file descriptor 2 off the terminal:
    it is collected while the block runs and appended to ``log_path`` if its folder exists by then (a command
    refused before any work leaves nothing). chipfit's own messages keep going to the terminal."""
    if verbose or log_path is None:
        yield
        return
    sys.stderr.flush()
    try:
        on_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # a stream of its own (a test's capture): it stays as it is
        on_fd2 = False
    saved = os.dup(2)
    with tempfile.TemporaryFile() as collected:
        os.dup2(collected.fileno(), 2)
        terminal = os.fdopen(os.dup(saved), "w", buffering=1) if on_fd2 else None
        previous = sys.stderr
        if terminal is not None:
            sys.stderr = terminal
        try:
            yield
        finally:
            sys.stderr = previous
            if terminal is not None:
                terminal.close()
            os.dup2(saved, 2)
            os.close(saved)
            collected.seek(0)
            text = collected.read()
            if text and Path(log_path).parent.is_dir():
                with open(log_path, "ab") as log:
                    log.write(text)
