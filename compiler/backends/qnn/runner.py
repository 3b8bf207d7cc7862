"""Run a QNN artifact here: its context binary on Qualcomm's HTP simulator (x86-64), for numerics only.

The simulator computes what the HTP computes (its fixed-point requantization, its fp16), so verification against
the float reference means what it would on the phone; its speed says nothing of the phone's, so the run plan is a
proxy that is never timed (no race, no profile).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from compiler.backends import NotRunnable, RunnerBase, RunPlan
from compiler.backends.qnn import ep
from compiler.backends.qnn.lower import CONTEXT_BINARY, CONTEXT_MODEL


class SimulatorRunner(RunnerBase):
    def __init__(self, model: Path, provider_options: Mapping[str, Any]) -> None:
        try:
            self.session = ep.session(str(model), provider_options)
        except Exception as exc:
            raise NotRunnable(f"the HTP simulator could not load {model.name}: {exc}") from exc
        sdk = ep.versions().get("qnn_sdk", "?")
        self.description = f"QNN {sdk} HTP simulator on this host ({model.name} + {CONTEXT_BINARY})"
        self._outputs = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {i.name: inputs[i.name] for i in self.session.get_inputs()}
        return dict(zip(self._outputs, self.session.run(self._outputs, feeds)))


def plan_run(artifact_dir: Path, options: Mapping[str, Any]) -> RunPlan:
    model = artifact_dir / CONTEXT_MODEL
    if not model.exists() or not (artifact_dir / CONTEXT_BINARY).exists():
        raise NotRunnable(f"{artifact_dir} lacks {CONTEXT_MODEL} or {CONTEXT_BINARY}")
    why = ep.unavailable()
    if why:
        raise NotRunnable(why)
    provider = {"soc_model": options["soc_model"], "htp_arch": options["htp_arch"]}
    return RunPlan(SimulatorRunner(model, provider), proxy=True, representative=False, execution="simulator",
                   note="HTP simulator: numerics, not speed (the context binary run by Qualcomm's x86-64 simulator "
                        "of the HTP)")
