"""QNN through ONNX Runtime: the onnxruntime-qnn plugin execution provider and the sessions chipfit opens on it.

The plugin registers once per process (ONNX Runtime keeps the registration); every session names the HTP backend
and the provider options of the target. On x86-64 Linux the wheel's ``libQnnHtp.so`` is Qualcomm's HTP simulator:
it compiles context binaries offline and runs them with the HTP's arithmetic, far slower than a phone.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from typing import Any, Iterator, Mapping

from compiler.errors import LowerError

EP = "QNNExecutionProvider"


def unavailable() -> str | None:
    """Why QNN cannot be used on this machine, or None where it can."""
    if not (sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")):
        return (f"onnxruntime-qnn's HTP simulator and offline compiler are Linux x86-64 builds; this machine is "
                f"{sys.platform} {platform.machine()}")
    try:
        import onnxruntime_qnn  # noqa: F401
    except ImportError as exc:
        return f"onnxruntime-qnn is not installed ({exc}); `pip install onnxruntime-qnn==2.7.0`"
    return None


def versions() -> dict[str, str]:
    try:
        import onnxruntime_qnn
        from onnxruntime_qnn import build_and_package_info as info
    except ImportError:
        return {"onnxruntime-qnn": "not installed"}
    return {"onnxruntime-qnn": onnxruntime_qnn.__version__, "qnn_sdk": str(getattr(info, "qnn_version", "unknown"))}


def _devices() -> list:
    import onnxruntime as ort
    import onnxruntime_qnn

    devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    if not devices:
        ort.register_execution_provider_library(EP, onnxruntime_qnn.get_library_path())
        devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
    if not devices:
        raise LowerError("onnxruntime-qnn registered but offers no device (its HTP library did not load)")
    return devices


@contextlib.contextmanager
def quantizer_quiet() -> Iterator[None]:
    """ONNX Runtime's quantizer warns on the root logger about pre-processing and opset upgrades it then does
    itself; those lines would read as problems in chipfit's output."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    """File descriptor 1 pointed at /dev/null: the simulator's libnative prints a banner to stdout when it loads,
    which would corrupt ``--json`` output."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(devnull)


def session(model: str | bytes, provider_options: Mapping[str, Any], config: Mapping[str, str] = ()) -> Any:
    """An ONNX Runtime session on the QNN HTP backend; ``config``: session config entries (e.g. ep.context_*)."""
    import onnxruntime as ort

    why = unavailable()
    if why:
        raise LowerError(why)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    for key, value in dict(config).items():
        options.add_session_config_entry(key, value)
    options.add_provider_for_devices(_devices(), {"backend_type": "htp",
                                                  **{k: str(v) for k, v in provider_options.items()}})
    with _stdout_silenced():
        return ort.InferenceSession(model, options)


def placement(sess: Any) -> list[tuple[str, str, str]]:
    """(execution provider, node name, op type) for every node the session placed."""
    return [(sub.ep_name, node.name, node.op_type)
            for sub in sess.get_provider_graph_assignment_info() for node in sub.get_nodes()]


def compile_options(options: Mapping[str, Any], fp16: bool) -> dict[str, Any]:
    """The provider options the offline compile takes from the target's resolved options."""
    out: dict[str, Any] = {"soc_model": options["soc_model"], "htp_arch": options["htp_arch"],
                           "offload_graph_io_quantization": int(options["offload_io_quantization"])}
    if options["vtcm_mb"]:
        out["vtcm_mb"] = options["vtcm_mb"]
    if fp16:
        out["enable_htp_fp16_precision"] = 1
    return out
