import pytest

from compiler.conformance import STAGES, Outcome, Report, markdown_summary, run_conformance
from compiler.errors import UsageError


def test_failures_are_classified_by_stage_and_unsupported_ops_listed():
    report = run_conformance("x86-64-avx2", ops=("test_celu", "test_relu"), models=False, backend="tvm")
    data = report.to_dict()
    assert data["backends"] == ["tvm"] and {o["backend"] for o in data["outcomes"]} == {"tvm"}
    by_item = {o["item"]: o for o in data["outcomes"]}
    assert by_item["test_celu"]["stage"] == "LOWER" and not by_item["test_celu"]["passed"]
    assert by_item["test_relu"]["passed"] and by_item["determinism"]["passed"]
    assert by_item["profile"]["passed"] and "measured:host" in by_item["profile"]["message"]
    assert data["unsupported_ops"] == ["Celu"]
    assert data["stages"]["LOWER"]["failed"] == 1 and data["not_run"] == 0


def test_every_backend_is_tested_and_named_on_each_outcome():
    report = run_conformance("host", ops=("test_relu",), models=False)
    assert report.backends == ["onnxruntime", "tvm", "llamacpp", "openvino"]
    ops = {(o.item, o.backend) for o in report.outcomes if o.kind == "op"}
    assert ops == {("test_relu", "onnxruntime"), ("test_relu", "tvm"), ("test_relu", "openvino")}
    assert {o.backend for o in report.outcomes if o.item == "determinism"} == {"onnxruntime", "tvm", "openvino"}
    assert all(o.backend for o in report.outcomes)
    with pytest.raises(UsageError, match="--backend coreml: target host has no such backend; its backends: onnxruntime, tvm"):
        run_conformance("host", ops=(), models=False, backend="coreml")


def test_artifacts_that_cannot_run_here_are_not_counted_as_passes():
    # TVM's aarch64 libraries for a board reached over RPC: lowered here, never run here
    report = run_conformance("arm64-cortex-a76", ops=("test_relu", "test_add"), models=False, backend="tvm")
    data = report.to_dict()
    ops = [o for o in data["outcomes"] if o["kind"] == "op"]
    assert len(ops) == 2 and all(not o["ran"] and o["backend"] == "tvm" for o in ops)
    assert "not run here" in ops[0]["message"]
    assert data["stages"]["RUN"]["reached"] == 0 and data["stages"]["RUN"]["not_run"] == 2
    assert data["stages"]["RUN"]["pass_rate"] is None and data["stages"]["LOWER"]["pass_rate"] == 1.0
    assert data["failed"] == 0 and data["not_run"] >= 2 and data["passed"] == data["total"] - data["not_run"]


def test_core_ml_skips_the_onnx_op_battery_with_a_reason():
    report = run_conformance("apple-a17", ops=("test_relu",), models=False)
    assert "op battery not applicable to coreml" in report.notes[0]
    assert not any(o.kind == "op" for o in report.outcomes)


def test_pass_rates_and_markdown():
    report = Report("t", ["b"], [Outcome("a", "op", True, backend="b"), Outcome("b", "op", False, "MISMATCH", "off", backend="b"),
                                 Outcome("c", "op", False, "LOWER", "no converter", backend="b"),
                                 Outcome("d", "op", True, "", "lowered; not run here", backend="b", ran=False)])
    rates = report.pass_rates()
    assert rates["LOWER"] == {"reached": 4, "failed": 1, "not_run": 0, "pass_rate": 0.75}
    assert rates["RUN"] == {"reached": 2, "failed": 0, "not_run": 1, "pass_rate": 1.0}
    assert rates["MISMATCH"] == {"reached": 2, "failed": 1, "not_run": 1, "pass_rate": 0.5}
    data = report.to_dict()
    assert (data["passed"], data["failed"], data["not_run"], data["pass_rate"]) == (1, 2, 1, round(1 / 3, 4))
    text = markdown_summary([data])
    assert "| t | b | 1/4 | 2 | 1 |" in text and "MISMATCH: b op `b`" in text
    assert len(STAGES) == 6


def test_the_llm_battery_builds_each_family_and_names_the_backend(tmp_path):
    report = run_conformance("x86-64-avx2", ops=(), models=False, llm=True, families=("qwen3", "minicpm3"),
                             backend="tvm")
    llm = [o for o in report.outcomes if o.kind == "llm"]
    assert {(o.item, o.backend) for o in llm} == {("qwen3", "tvm"), ("minicpm3", "tvm")}
    assert all(o.passed and o.ran for o in llm), [o for o in llm if not o.passed]
    assert "greedy tokens equal" in llm[0].message
