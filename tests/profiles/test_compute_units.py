"""A heterogeneous chip (CPU cores and an NPU sharing one memory): each backend's artifact is estimated on the
unit it runs on, not at the chip's biggest peak."""

from compiler.build import BuildContext, BuildOptions, build
from compiler.frontend import load_model
from profiles.profile import profile_artifacts
from targets.registry import target_registry
from targets.request import ProfileRequest
from targets.spec import load_spec

SPEC = """
schema_version = 1
id = "rv-npu-board"
name = "A RISC-V board with an NPU"
vendor = "Test"
backends = ["tvm", "onnxruntime"]
build_all_backends = true
default_precision = "fp32"

[supports]
precisions = ["fp32"]

[reach]
kind = "none"
reason = "the board is not attached here"

[backend_options.tvm]
target = { kind = "llvm", mtriple = "x86_64-linux-gnu", mcpu = "haswell" }

[backend_options.onnxruntime]
execution_provider = "CPUExecutionProvider"

[verify.fp32]
atol = 1e-4
rtol = 1e-4
min_cosine = 0.99999

[hardware]
chip = "rv_npu_board"
compute = "4x RVV 1.0 cores, a 4 TOPS int8 NPU"
process_nm = "unknown"
cores = 4
clock_ghz = 1.6
peak_gops = { int8 = 4000.0, fp16 = 2000.0, fp32 = 51.2 }
memory_gb = 4
memory_bandwidth_gbs = 17.0
power_w = 5.0

[hardware.sources]
cores = "board datasheet"
clock_ghz = "board datasheet"
peak_gops = "board datasheet"
memory_gb = "board datasheet"
memory_bandwidth_gbs = "board datasheet"
power_w = "board datasheet"

[hardware.units.cpu]
kind = "cpu"
peak_gops = { fp32 = 51.2, int8 = 204.8 }
power_w = 2.0
sources = { peak_gops = "4 cores x 1.6 GHz x 8 fp32 lanes", power_w = "board datasheet" }

[hardware.units.npu]
kind = "npu"
peak_gops = { int8 = 4000.0, fp16 = 2000.0, fp32 = 500.0 }
power_w = 3.0
backends = ["onnxruntime"]
sources = { peak_gops = "NPU datasheet", power_w = "board datasheet" }
"""


def test_a_cpu_backend_and_an_npu_backend_get_their_units_estimates(tmp_path):
    path = tmp_path / "rv-npu-board.toml"
    path.write_text(SPEC)
    spec = load_spec(path)
    registry = target_registry().including({spec.id: spec}, str(path))
    results = build(load_model("example"), BuildOptions(targets=[spec.id], out_dir=tmp_path / "out",
                                                         measure_latency=False), BuildContext(targets=registry))
    assert {r.backend for r in results} == {"tvm", "onnxruntime"} and all(r.ok for r in results)
    run = profile_artifacts(tmp_path / "out", ProfileRequest(runs=5, min_runs=3, warmup=1), registry=registry)
    assert not run.errors, run.errors
    by_backend = {p.backend: p for p in run.profiles}
    cpu, npu = by_backend["tvm"].estimate, by_backend["onnxruntime"].estimate
    assert cpu["compute_unit"] == "cpu" and npu["compute_unit"] == "npu"  # tvm declares a CPU; the spec puts ORT on the NPU
    assert cpu["inputs"]["peak_gops"] == {"fp32": 51.2, "int8": 204.8} and cpu["inputs"]["power_w"] == 2.0
    assert npu["inputs"]["peak_gops"]["fp32"] == 500.0 and npu["inputs"]["power_w"] == 3.0
    assert cpu["latency_ms"] > npu["latency_ms"] and cpu["energy_mj"] != npu["energy_mj"]
    assert by_backend["tvm"].latency_method == "estimated:roofline-v1"
