"""examples/ci: the workflow's commands, run as written, in a copy of the repository's layout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from profiles.compare import load_profiles
from tests.profiles.junit_schema import validate_junit

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "examples" / "ci"


def _steps() -> list[dict]:
    workflow = yaml.safe_load((CI / "github-workflow.yml").read_text())
    return workflow["jobs"]["release"]["steps"]


def _workspace(tmp_path: Path) -> tuple[Path, dict]:
    """examples/ci copied, and a .venv/bin/chipfit that is this interpreter's chipfit."""
    ws = tmp_path / "ws"
    shutil.copytree(CI, ws / "examples" / "ci")
    shim = ws / ".venv" / "bin" / "chipfit"
    shim.parent.mkdir(parents=True)
    shim.write_text(f"#!/usr/bin/env bash\nexec {sys.executable} -m compiler.cli \"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "CHIPFIT_CACHE_DIR": str(tmp_path / "cache"),
           "GITHUB_STEP_SUMMARY": str(tmp_path / "step-summary.md"), "PYTHONPATH": str(REPO)}
    return ws, env


def _bash(command: str, ws: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=ws, env=env, capture_output=True,
                          text=True, timeout=900)


def test_the_workflow_sets_up_with_the_readme_command():
    runs = [s["run"] for s in _steps() if "run" in s]
    assert runs[0] == "bash .ci/setup"
    assert "bash .ci/setup && .venv/bin/python -m pytest" in (REPO / "README.md").read_text()


def test_the_workflow_commands_build_gate_and_publish(tmp_path):
    ws, env = _workspace(tmp_path)
    # The baseline, made as README.md says, on this machine (a committed one holds another runner's timings),
    # from the dist/ the workflow then rebuilds: the workflow's release finds every cell cached and every
    # measurement of an unchanged artifact kept, so the gate must pass. (Between-run noise is the business
    # of tests/profiles/test_compare.py; on this kind of machine it can exceed any useful threshold.)
    baseline = ws / "examples" / "ci" / "baseline"
    shutil.rmtree(baseline)
    for command in (".venv/bin/chipfit release examples/ci/release.toml -o dist --jobs 2",
                    ".venv/bin/chipfit baseline update dist examples/ci/baseline"):
        done = _bash(command, ws, env)
        assert done.returncode == 0, done.stderr[-3000:]
    failed = False
    for step in _steps():
        if "run" not in step or step["run"] == "bash .ci/setup":
            continue  # `uses:` steps are the CI service's; setup is what made this interpreter
        if failed and step.get("if") != "always()":
            continue
        done = _bash(step["run"], ws, env)
        assert done.returncode == 0, f"{step['name']}: {done.stdout[-2000:]} {done.stderr[-3000:]}"
    index = json.loads((ws / "dist" / "index.json").read_text())
    assert index["summary"]["ok"] and index["summary"]["cells"] == 5 and index["summary"]["artifacts"] == 7
    assert index["summary"]["built"] == 0  # the baseline run filled the cache
    measured = [a["profile"] for c in index["cells"] for a in c["artifacts"] if a["profile"]["runner"] == "host"]
    assert len(measured) == 3 and all(p["reused_measurement"] for p in measured)
    suite = validate_junit((ws / "dist" / "compare.xml").read_text())
    assert suite.get("failures") == "0" and int(suite.get("tests")) >= 7 * 4
    published = (tmp_path / "step-summary.md").read_text()
    assert "## chipfit release digits" in published and "## chipfit compare: 0 regression(s)" in published
    # the committed baseline covers exactly this release's cells, in the schema this chipfit reads
    # (by model, target and precision: a target that chooses its backend by measurement may choose another one
    # on another machine, which compare matches and reports as an alarm)
    slots = (lambda keys: {(k.split("/")[0], k.split("/")[1], k.split("/")[3]) for k in keys})
    assert slots(load_profiles(CI / "baseline")) == slots(load_profiles(ws / "dist"))
