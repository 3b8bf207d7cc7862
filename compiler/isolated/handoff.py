"""The subprocess boundary: files in a folder, one process in the backend's environment, a JSON status back.

chipfit writes into the hand-off folder the ONNX graph (``model.onnx``), calibration arrays in the layout the
backend declares (``calibration/NNNN_<input>.npy``, one sample each), the verification inputs
(``verify/<input>.npy``, batched) and ``request.json``; the backend's SDK script writes its artifact files into
``artifact/``, the outputs on the verification inputs into ``outputs/<output>.npy``, and returns what
``status.json`` records. Everything the process prints is kept in ``log.txt``. A crash (a signal), a hang (the
timeout: the whole process group is killed) or an exception in the SDK is an error of this cell, naming why,
with the end of the log; chipfit itself never goes down with it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.errors import BuildError
from compiler.isolated.environment import EnvironmentState, clean_env

REQUEST_SCHEMA_VERSION = 1
CHILD = Path(__file__).resolve().parent / "child.py"
LOG = "log.txt"
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def save_arrays(folder: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """``arrays`` as ``folder/<name>.npy``; name -> path relative to the hand-off folder."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, array in arrays.items():
        path = folder / f"{_safe(name)}.npy"
        np.save(path, np.ascontiguousarray(array))
        files[name] = f"{folder.name}/{path.name}"
    return files


def save_samples(folder: Path, batched: Mapping[str, np.ndarray], layout: str, limit: int) -> list[dict[str, str]]:
    """Calibration samples one file each (batch 1), in the ``layout`` the backend declared; at most ``limit``."""
    folder.mkdir(parents=True, exist_ok=True)
    count = min(limit, len(next(iter(batched.values()))))
    samples = []
    for i in range(count):
        sample = {}
        for name, array in batched.items():
            path = folder / f"{i:04d}_{_safe(name)}.npy"
            np.save(path, to_layout(np.ascontiguousarray(array[i:i + 1]), layout))
            sample[name] = f"{folder.name}/{path.name}"
        samples.append(sample)
    return samples


def to_layout(array: np.ndarray, layout: str) -> np.ndarray:
    """chipfit's arrays are in the graph's own layout (NCHW for the ONNX conv nets chipfit traces); a backend
    declaring NHWC gets 4-D arrays transposed, anything else as it is."""
    if layout == "NHWC" and array.ndim == 4:
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return array


def load_outputs(folder: Path, status: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {name: np.load(folder / rel) for name, rel in status.get("outputs", {}).items()}


def write_request(folder: Path, request: Mapping[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "request.json").write_text(json.dumps({"schema_version": REQUEST_SCHEMA_VERSION, **request},
                                                    indent=2, sort_keys=True) + "\n")


def run_isolated(state: EnvironmentState, script: Path, folder: Path, timeout_s: float, what: str,
                 error: type[BuildError]) -> dict[str, Any]:
    """Run ``script`` in ``state``'s environment on the hand-off ``folder``; its status, or ``error`` saying why not."""
    log = folder / LOG
    with log.open("ab") as out:
        proc = subprocess.Popen([str(state.python_exe), "-I", str(CHILD), str(script), str(folder)], cwd=folder,
                                stdout=out, stderr=subprocess.STDOUT, env=clean_env(), start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: the SDK's helper processes go with it
            proc.wait()
            raise error(f"{what}: the isolated process did not finish within {timeout_s:g} s and was killed "
                        f"(environment {state.name}){_tail(log)}") from None
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else f"signal {-code}"
        raise error(f"{what}: the isolated process died with {name} (environment {state.name}){_tail(log)}")
    status_file = folder / "status.json"
    if not status_file.is_file():
        raise error(f"{what}: the isolated process exited {code} without writing status.json{_tail(log)}")
    status = json.loads(status_file.read_text())
    if not status.get("ok"):
        # SDKs wrap their reason in a traceback of their own: its last line says it
        lines = [line for line in _ANSI.sub("", str(status.get("error", "failed"))).splitlines() if line.strip()]
        raise error(f"{what}: {lines[-1].strip() if lines else 'failed'}{_tail(log)}")
    return status


def _tail(log: Path, lines: int = 12) -> str:
    text = _ANSI.sub("", log.read_text(errors="replace")) if log.is_file() else ""
    kept = [line for line in text.splitlines() if line.strip() and "%|" not in line][-lines:]
    return f"; the end of its log ({log}):\n" + "\n".join(kept) if kept else f" (log: {log}, empty)"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)
