"""Run an OpenVINO IR in OpenVINO's own runtime, as an application loads it (`Core.compile_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.backends import RunnerBase
from targets.signature import Signature

#: Verification runs at f32: on CPUs with AVX-512 BF16 or AMX the CPU plugin's default execution precision is bf16,
#: which would hide the artifact's own numerics behind bf16 rounding (2.8e-3 vs 2.8e-7 on a small conv net).
F32 = {"INFERENCE_PRECISION_HINT": "f32"}


class OpenVinoRunner(RunnerBase):
    per_op_source = "OpenVINO performance counters (PERF_COUNT)"

    def __init__(self, model_xml: Path, signature: Signature, device: str = "CPU",
                 config: Mapping[str, Any] | None = None, threads: int = 0) -> None:
        import openvino as ov

        self._xml, self._signature, self._device = model_xml, signature, device
        self._config = {**(config or {}), **(F32 if device == "CPU" else {})}
        self._core = ov.Core()
        self._model = self._core.read_model(str(model_xml))
        self._compiled = self._compile(threads)
        hint = self._config.get("INFERENCE_PRECISION_HINT", "device default")
        self.description = (f"openvino {ov.get_version().split('-')[0]} {device} plugin on this host at "
                            f"{hint} ({model_xml.name})")

    def _compile(self, threads: int, profile: bool = False):
        config = dict(self._config)
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if profile:
            config["PERF_COUNT"] = True
        return self._core.compile_model(self._model, self._device, config)

    def set_threads(self, threads: int) -> bool:
        self._compiled = self._compile(threads)
        return True

    def _feeds(self, compiled, inputs: Mapping[str, np.ndarray]) -> dict[int, np.ndarray]:
        """Inputs by port index: a port carries the ONNX input's tensor name, else it is in the graph's order."""
        names = [t.name for t in self._signature.inputs]
        feeds = {}
        for index, port in enumerate(compiled.inputs):
            name = next((n for n in names if n in port.get_names()), names[index])
            feeds[index] = np.asarray(inputs[name], order="C")  # ascontiguousarray makes a 0-d input 1-d
        return feeds

    def _infer(self, compiled, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        # a static-shaped IR (the NPU's) gets its batch from the caller (verification runs it batch by batch)
        result = compiled.create_infer_request().infer(self._feeds(compiled, inputs))
        return {t.name: np.array(result[compiled.outputs[i]]) for i, t in enumerate(self._signature.outputs)}

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._infer(self._compiled, inputs)

    def profile_ops(self, inputs: Mapping[str, np.ndarray], runs: int = 5) -> list[dict[str, Any]]:
        """Mean time per executed node from OpenVINO's performance counters, slowest first."""
        threads = self._compiled.get_property("INFERENCE_NUM_THREADS")
        compiled = self._compile(int(threads), profile=True)
        request = compiled.create_infer_request()
        feeds = self._feeds(compiled, inputs)
        totals: dict[str, dict[str, Any]] = {}
        for _ in range(runs):
            request.infer(feeds)
            for info in request.profiling_info:
                if info.status.name != "EXECUTED":
                    continue
                row = totals.setdefault(info.node_name, {"node": info.node_name, "op": info.node_type,
                                                         "exec_type": info.exec_type, "total_us": 0.0})
                row["total_us"] += info.real_time.total_seconds() * 1e6
        rows = [{**r, "mean_us": r.pop("total_us") / runs} for r in totals.values()]
        return sorted(rows, key=lambda r: -r["mean_us"])
