from compiler.conformance import STAGES, Outcome, Report, markdown_summary, run_conformance


def test_failures_are_classified_by_stage_and_unsupported_ops_listed():
    report = run_conformance("x86-64-avx2", ops=("test_celu", "test_relu"), models=False)
    data = report.to_dict()
    by_item = {o["item"]: o for o in data["outcomes"]}
    assert by_item["test_celu"]["stage"] == "LOWER" and not by_item["test_celu"]["passed"]
    assert by_item["test_relu"]["passed"] and by_item["determinism"]["passed"]
    assert by_item["profile"]["passed"] and "measured:host" in by_item["profile"]["message"]
    assert data["unsupported_ops"] == ["Celu"]
    assert data["stages"]["LOWER"]["failed"] == 1


def test_core_ml_skips_the_onnx_op_battery_with_a_reason():
    report = run_conformance("apple-a17", ops=("test_relu",), models=False)
    assert "op battery not applicable" in report.notes[0]
    assert not any(o.kind == "op" for o in report.outcomes)


def test_pass_rates_and_markdown():
    report = Report("t", "b", [Outcome("a", "op", True), Outcome("b", "op", False, "MISMATCH", "off"),
                               Outcome("c", "op", False, "LOWER", "no converter")])
    rates = report.pass_rates()
    assert rates["LOWER"] == {"reached": 3, "failed": 1, "pass_rate": round(2 / 3, 4)}
    assert rates["MISMATCH"] == {"reached": 2, "failed": 1, "pass_rate": 0.5}
    text = markdown_summary([report.to_dict()])
    assert "| t | b | 1/3 |" in text and "MISMATCH: op `b`" in text
    assert len(STAGES) == 6


def test_the_llm_battery_builds_each_family_and_names_the_backend(tmp_path):
    report = run_conformance("x86-64-avx2", ops=(), models=False, llm=True, families=("qwen3", "minicpm3"))
    llm = [o for o in report.outcomes if o.kind == "llm"]
    assert {(o.item, o.backend) for o in llm} == {("qwen3", "tvm"), ("minicpm3", "tvm")}
    assert all(o.passed for o in llm), [o for o in llm if not o.passed]
    assert "greedy tokens equal" in llm[0].message
