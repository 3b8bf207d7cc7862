"""The host runner's child process: load one artifact, time it, report JSON on stdout.

Running in a child keeps a crashing backend from taking chipfit down, lets the thread count and
CPU affinity be set before any runtime starts its pool, and makes peak resident memory the
artifact's own (``ru_maxrss`` of this process).

    python -m profiles.worker < request.json > result.json
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def _pin(threads: int | None) -> list[int]:
    cpus = sorted(os.sched_getaffinity(0))
    if threads:
        cpus = cpus[:threads]
        os.sched_setaffinity(0, cpus)
    return cpus


def main() -> int:
    request = json.load(sys.stdin)
    cpus = _pin(request.get("threads"))
    # Imported after pinning so that thread pools size themselves to the pinned CPUs.
    from profiles.meters import MeterError, energy_per_inference, open_meter
    from profiles.stats import tight_enough
    from targets.backend import NotRunnable
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry
    from targets.signature import seeded_inputs

    artifact = read_artifact(request["artifact"])
    problems = artifact.file_problems()
    if problems:
        print(json.dumps({"error": f"refusing to run a modified artifact: {'; '.join(problems)}"}))
        return 0
    manifest = artifact.manifest
    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    backend = backend_registry().get(manifest.backend.name)
    registry = target_registry()
    if request.get("spec_file") and manifest.target.id not in registry:
        from targets.spec import load_spec

        target = load_spec(request["spec_file"])  # a spec file named in a release, not an installed target
    else:
        target = registry.get(manifest.target.id)
    if manifest.llm is not None:
        return _decoder(request, artifact, backend, target, cpus, baseline_rss)
    try:
        plan = backend.plan_run(artifact.path, manifest.backend.options, manifest.signature, target, detect_host())
    except NotRunnable as exc:
        print(json.dumps({"not_runnable": str(exc)}))
        return 0
    if plan.proxy:
        print(json.dumps({"not_runnable": f"only a proxy run is possible here ({plan.note})"}))
        return 0
    if request.get("threads"):
        plan.runner.set_threads(request["threads"])
    batch = manifest.signature.concretized()
    inputs = seeded_inputs(batch, seed=0, symbolic_size=1,
                           integer_ranges=manifest.export.integer_ranges if manifest.export else None)

    def run_once() -> None:
        plan.runner.run(inputs)

    for _ in range(request["warmup"]):
        run_once()
    samples: list[float] = []
    deadline = time.perf_counter() + request["budget_s"]
    while len(samples) < request["max_runs"]:
        start = time.perf_counter()
        run_once()
        samples.append((time.perf_counter() - start) * 1e3)
        if len(samples) >= request["min_runs"] and (tight_enough(samples, request["target_rel"]) or time.perf_counter() > deadline):
            break
    result = {
        "samples_ms": samples,
        "runner_description": plan.runner.description,
        "cpus": cpus,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "baseline_rss_mb": baseline_rss / 1024.0,  # the Python runner before the artifact was loaded
        "per_op": plan.runner.profile_ops(inputs),
        "per_op_source": plan.runner.per_op_source,
    }
    if request.get("meter"):
        try:
            meter = open_meter(request["meter"])
            reading = energy_per_inference(meter, run_once, iterations=max(len(samples), 10))
            result["energy"] = reading.__dict__
        except MeterError as exc:
            result["energy_error"] = str(exc)
    print(json.dumps(result))
    return 0


def _decoder(request, artifact, backend, target, cpus, baseline_rss) -> int:
    """A decoder LM: whole generations on its own runtime (`profiles.llm.measure_decoder`)."""
    from profiles.llm import generations, measure_decoder
    from profiles.meters import MeterError, open_meter
    from targets.backend import NotRunnable
    from targets.host import detect_host

    manifest = artifact.manifest
    start = time.perf_counter()
    try:
        plan = backend.plan_generate(artifact.path, manifest.backend.options, target, detect_host())
    except NotRunnable as exc:
        print(json.dumps({"not_runnable": str(exc)}))
        return 0
    if plan.proxy:
        print(json.dumps({"not_runnable": f"only a proxy run is possible here ({plan.note})"}))
        return 0
    load_s = time.perf_counter() - start
    if request.get("threads"):
        plan.runner.set_threads(request["threads"])
    meter, energy_error = None, None
    if request.get("meter"):
        try:
            meter = open_meter(request["meter"])
        except MeterError as exc:
            energy_error = str(exc)
    try:
        raw = measure_decoder(plan.runner, manifest.llm, request["prompt_lengths"], request["new_tokens"],
                              generations(request["runs"]), request.get("sustained", 0), meter)
    except MeterError as exc:
        energy_error = str(exc)
        raw = measure_decoder(plan.runner, manifest.llm, request["prompt_lengths"], request["new_tokens"],
                              generations(request["runs"]), request.get("sustained", 0), None)
    result = {"llm": raw, "runner_description": plan.runner.description, "cpus": cpus, "load_s": load_s,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
              "baseline_rss_mb": baseline_rss / 1024.0}
    if energy_error:
        result["energy_error"] = energy_error
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
