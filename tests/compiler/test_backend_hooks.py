"""What core code asks of a backend: its fingerprint for the cache, its device runner, its failures' stages."""

from __future__ import annotations

import dataclasses
import importlib
import sys
import textwrap
import time

import numpy as np
import pytest

from compiler.backends import DeviceTiming, OptionSchema, RunPlan
from compiler.backends.onnxruntime.options import SCHEMA as ORT_SCHEMA
from compiler.backends.onnxruntime import OnnxRuntimeBackend
from compiler.build import BuildContext, BuildOptions, build
from compiler.errors import QuantizeError
from compiler.release.cache import toolchain_digest
from profiles.profile import profile_artifacts
from targets.registry import backend_registry, target_registry
from targets.request import ProfileRequest


def test_a_plugin_whose_code_changes_gets_a_new_cache_key(tmp_path, monkeypatch):
    package = tmp_path / "acme_npu"
    package.mkdir()
    source = textwrap.dedent("""
        from compiler.backends import BACKEND_API_VERSION, BackendBase

        class AcmeBackend(BackendBase):
            name = "acme"
            api_version = BACKEND_API_VERSION
            def versions(self):
                return {"acme-compiler": "1.0"}

        backend = AcmeBackend()
        """)
    (package / "__init__.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    plugin = importlib.import_module("acme_npu").backend
    before = toolchain_digest([plugin])
    assert toolchain_digest([plugin]) == before  # stable while nothing changes
    (package / "lower.py").write_text("# the vendor edits its lowering\n")
    assert toolchain_digest([plugin]) != before
    sys.modules.pop("acme_npu", None)


class LoopbackDeviceBackend(OnnxRuntimeBackend):
    """ONNX Runtime with a device runner of its own: the 'device' is this machine, reached through the hook."""

    capabilities = dataclasses.replace(OnnxRuntimeBackend.capabilities, device_timing=True)

    def time_on_device(self, artifact_dir, options, signature, device, runs):
        from targets.host import detect_host
        from targets.signature import seeded_inputs

        plan = self.plan_run(artifact_dir, options, signature, target_registry().get("host"), detect_host())
        inputs = seeded_inputs(signature.concretized(), symbolic_size=1)
        samples = []
        for _ in range(runs):
            start = time.perf_counter()
            plan.runner.run(inputs)
            samples.append((time.perf_counter() - start) * 1e3)
        return DeviceTiming(tuple(samples), f"{device.key} at {device.address}", f"loopback device {device.key}")


def test_a_plugin_with_its_own_device_runner_is_profiled_through_it(example_traced, tmp_path):
    build(example_traced, BuildOptions(["host"], tmp_path, backend="onnxruntime", measure_latency=False))
    backends = backend_registry(entry_points=[]).including({"onnxruntime": LoopbackDeviceBackend()}, "test")
    run = profile_artifacts(tmp_path / "example" / "host", ProfileRequest(rpc="127.0.0.1:9190", key="bench1", runs=12),
                            backends=backends)
    assert not run.errors, run.errors
    (p,) = run.profiles
    assert p.runner == "rpc:bench1" and p.latency_method == "measured:rpc:bench1"
    assert p.runner_description == "loopback device bench1" and len(p.latency_samples_ms) == 12
    # a backend without a device runner says so, and the artifact is measured here instead
    plain = profile_artifacts(tmp_path / "example" / "host", ProfileRequest(rpc="127.0.0.1:9190", key="bench1", runs=12))
    (q,) = plain.profiles
    assert q.runner == "host" and "no device runner" in q.not_measured_because


class FaultyBackend(OnnxRuntimeBackend):
    """Real ONNX Runtime lowering with one fault injected at a named point."""

    name = "faulty"

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def lower(self, job):
        if self.fault == "lower":  # worded like a quantization problem: the stage must not come from the words
            raise RuntimeError("quantization tables missing in the vendor compiler")
        if self.fault == "quantize":
            raise QuantizeError("the vendor's quantizer refused a layer")
        return super().lower(job)

    def plan_run(self, artifact_dir, options, signature, target, host):
        plan = super().plan_run(artifact_dir, options, signature, target, host)
        if self.fault != "run":
            return plan

        class Broken:
            description, per_op_source = "broken runtime", ""

            def run(self, inputs):
                raise RuntimeError("device lost")

        return RunPlan(Broken())

    options_schema = OptionSchema("faulty", ORT_SCHEMA.fields)


@pytest.mark.parametrize("fault, status, stage", [("lower", "error", "LOWER"), ("quantize", "error", "QUANTIZE"),
                                                  ("run", "failed", "RUN")])
def test_the_failing_stage_comes_from_the_error_type(example_traced, tmp_path, fault, status, stage):
    host = target_registry().get("host")
    spec = dataclasses.replace(host, id="faulty-chip", backends=("faulty",), build_all_backends=False,
                               backend_options={"faulty": {"execution_provider": "CPUExecutionProvider"}})
    backend = FaultyBackend(fault)
    ctx = BuildContext(targets=target_registry().including({"faulty-chip": spec}, "test"),
                       backends=backend_registry().including({"faulty": backend}, "test"))
    (result,) = build(example_traced, BuildOptions(["faulty-chip"], tmp_path, measure_latency=False), ctx)
    assert (result.status, result.stage) == (status, stage), result.message


def test_calibration_refused_during_quantization_is_a_quantize_failure(example_traced, tmp_path):
    bad = tmp_path / "calib.npz"
    np.savez(bad, image=np.zeros((4, 1, 8, 8), np.float32) + np.nan)
    (result,) = build(example_traced, BuildOptions(["snapdragon-8gen3"], tmp_path, calibration=str(bad),
                                                   measure_latency=False, backend="qnn"))
    assert result.status == "error" and result.stage == "QUANTIZE" and "NaN" in result.message
