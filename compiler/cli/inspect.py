"""``chipfit inspect``: what an artifact or a model is, its manifest and its numerics."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compiler.errors import UsageError
from targets.spec import TargetError
from compiler.cli.build import accuracy_text
from compiler.cli.text import size



def cmd_inspect(args: argparse.Namespace) -> int:
    from targets.manifest import find_artifacts, read_artifact
    from targets.registry import backend_registry

    path = Path(args.path)
    model_folder = (path / "config.json").is_file() and not (path / "manifest.json").is_file()  # not an LLM folder
    if args.path == "example" or path.suffix.lower() in (".pt2", ".onnx") or model_folder:
        return _describe_model(args)
    if not path.exists():
        raise UsageError(f"{path}: no such artifact directory")
    artifacts = [read_artifact(path)] if (path / "manifest.json").exists() else find_artifacts(path)
    if not artifacts:
        raise UsageError(f"{path}: holds no chipfit artifact (no manifest.json at or under it)")
    backends = backend_registry()
    status = 0
    reports = []
    for artifact in artifacts:
        problems = artifact.file_problems()
        drift = _toolchain_drift(artifact.manifest, backends)
        status = status or (1 if problems else 0)
        reports.append((artifact, problems, drift))
    if args.json:
        print(json.dumps([{"path": str(a.path), "manifest": a.manifest.to_dict(), "file_problems": p,
                           "toolchain_drift": d} for a, p, d in reports], indent=2))
        return status
    for artifact, problems, drift in reports:
        print(_describe_artifact(artifact, problems, drift))
    return status



def _describe_model(args: argparse.Namespace) -> int:
    """A model (not an artifact): its inputs and outputs, so that sample files can be written for it."""
    from compiler.frontend import load_model, signature_of

    path = Path(args.path)
    if path.is_dir():
        from compiler.frontend.huggingface import load_hf_directory

        model = load_hf_directory(path, digest=False)
        if args.json:
            from targets.schema import to_json

            print(json.dumps({"decoder": to_json(model.spec)}, indent=2))
            return 0
        d = model.spec
        print(f"{path}: {d.architecture} ({d.model_type}), {d.layers} layers, hidden {d.hidden_size}, vocab "
              f"{d.vocab_size}, {d.max_positions} positions, {d.parameters / 1e6:.1f} M parameters")
        print("  inputs:  token ids (a .txt file of prompts, one per line, for --samples)")
        return 0
    signature = signature_of(args.path) if path.suffix.lower() == ".pt2" else load_model(args.path).signature
    if args.json:
        print(json.dumps(signature.to_dict(), indent=2))
        return 0
    print(f"{args.path}:")
    for t in signature.inputs:
        print(f"  input   {t.name:<20} {t.shape_str():<20} {t.dtype}")
    for t in signature.outputs:
        print(f"  output  {t.name:<20} {t.shape_str():<20} {t.dtype}")
    names = ", ".join(f"'{t.name}'" for t in signature.inputs)
    print(f"sample files: a .npz with arrays {names}, leading axis = samples (a symbolic 'batch' dimension is that axis)")
    return 0



def _toolchain_drift(manifest, backends) -> dict[str, tuple[str, str]]:
    """Toolchain packages whose installed version differs from the one the artifact was built with."""
    name = manifest.backend.name
    if name not in backends:
        return {}
    try:
        now = backends.get(name).versions()
    except TargetError:
        return {}
    built = manifest.toolchain
    return {k: (built[k], v) for k, v in now.items() if k in built and built[k] != v}



def _shape(tensor) -> str:
    return f"{tensor.name} {'x'.join(map(str, tensor.shape))} {tensor.dtype}"



def _describe_artifact(artifact, problems: list[str], drift: dict) -> str:
    m = artifact.manifest
    numerics = m.numerics
    lines = [
        f"{artifact.path}",
        f"  model:     {m.model.name} from {m.model.source} ({m.model.source_kind}, "
        f"sha256 {m.model.source_digest[:16]}...)",
        f"  target:    {m.target.id} ({m.target.name}), spec sha256 {m.target.spec_digest[:16]}...",
        f"  backend:   {m.backend.name}  precision: {m.precision}",
        f"  options:   {json.dumps(m.backend.options, sort_keys=True)}",
        f"  built by:  chipfit {m.chipfit_version}; " + ", ".join(f"{k} {v}" for k, v in m.toolchain.items()),
        "  inputs:    " + ", ".join(_shape(t) for t in m.signature.inputs),
        "  outputs:   " + ", ".join(_shape(t) for t in m.signature.outputs),
        "  passes:    " + (", ".join(p.get("name", p.get("precision", "?")) for p in m.passes) or "none"),
    ]
    if m.export:
        lines += _export_lines(m.export)
    if m.calibration:
        c = m.calibration
        lines.append(f"  calibration: {c.samples} samples from {c.origin}" + (" (RANDOM data)" if c.random else ""))
    if m.quantization:
        q = m.quantization
        lines.append("  quantization: " + ", ".join(f"{k} {v}" for k, v in q["settings"].items()))
        lines.append(f"    accuracy: {accuracy_text(q['accuracy'])}")
        for row in q.get("sensitivity", [])[:10]:
            lines.append(f"    sensitivity: {row['node']:<30} {row['op']:<8} SQNR {row['sqnr_db']:6.1f} dB  cosine {row['cosine']:.6f}")
        if q.get("kept_in_float"):
            lines.append(f"    kept in float: {', '.join(q['kept_in_float'])}")
    if m.llm:
        lines += _llm_lines(m.llm)
    lines.append(f"  files ({size(m.size_bytes)}):")
    shown = list(m.files.items())
    for rel, meta in shown[:8]:
        lines.append(f"    {rel:<40} {size(meta.bytes):>9}  sha256 {meta.sha256[:16]}...")
    if len(shown) > 8:
        lines.append(f"    ... and {len(shown) - 8} more")
    lines.append("  integrity: " + ("all files match their sha256" if not problems else "; ".join(problems)))
    repro = m.reproducibility
    if repro:
        varying = [f"{rel} normalized" for rel in repro.normalized] + [f"{rel} left out" for rel in repro.excluded]
        lines.append(f"  content:   digest {repro.content_digest[:16]}... ("
                     + ("files byte-identical across builds" if repro.byte_identical_expected else
                        "over what two builds share: " + ", ".join(varying)) + ")")
    lines.append(f"  numerics:  {numerics.status}" + (f" ({numerics.reason})" if numerics.reason else ""))
    if numerics.runner:
        lines.append(f"    runner: {numerics.runner}")
        lines.append(f"    inputs: {numerics.inputs}")
        tol = numerics.tolerance
        if tol is not None:
            lines.append(f"    tolerance: atol {tol.atol:g} + rtol {tol.rtol:g} x max|ref|, cosine >= {tol.min_cosine:g}")
        for o in numerics.outputs:
            sqnr = "exact" if o.sqnr_db is None else f"{o.sqnr_db:.1f} dB"
            lines.append(f"    {o.output}: cosine {o.cosine:.6f}, max|err| {o.max_abs_error:.3e} "
                         f"(max|ref| {o.max_abs_reference:.3g}), SQNR {sqnr}")
    if numerics.generation:
        lines += _generation_lines(numerics.generation)
    if numerics.structure:
        st = numerics.structure
        lines.append(f"    structure: {st.get('format')} spec v{st.get('specification_version')}, "
                     f"weights {', '.join(st.get('weight_dtypes', []))}, ops {json.dumps(st.get('op_histogram'))}")
    fusion = m.fusion or {}
    if fusion.get("passes"):
        from compiler.fusion_stage import fusion_summary

        lines.append(f"  fusion:    {fusion_summary(fusion)}")
        for p in fusion["passes"]:
            delta = ", ".join(f"{k} {v:+d}" for k, v in p.get("op_delta", {}).items())
            lines.append(f"    {p['name']:<16} fired {p.get('fired', 0):>3}  {p.get('seconds', 0):.3f} s"
                         + (f"  ({delta})" if delta else "") + (f"  numerics {p['numerics']}" if p.get("numerics") else ""))
    elif fusion:
        lines.append(f"  fusion:    not applied ({fusion.get('reason')})")
    if m.fallbacks:
        lines.append(f"  fallbacks: {len(m.fallbacks)} ops fall back to CPU: {', '.join(m.fallbacks[:6])}")
    for note in m.notes:
        lines.append(f"  note: {note}")
    for pkg, (built, now) in drift.items():
        lines.append(f"  WARNING: built with {pkg} {built}, this host has {now}: the artifact may not load here")
    return "\n".join(lines)



def _export_lines(export) -> list[str]:
    check = export.reference_check
    outputs = ", ".join(f"{name} cos {o['cosine']:.6f} max|diff| {o['max_abs_diff']:.2e}"
                        for name, o in check.get("outputs", {}).items())
    return [f"  export:    {export.exporter} for {export.task} ({export.task_from}); "
            + ", ".join(f"{k} {v}" for k, v in export.environment.items()),
            f"    {export.modality} inputs made by the model's processor ({', '.join(export.processor) or 'none'}): "
            f"{', '.join(export.inputs)}; fixed dims {json.dumps(dict(export.fixed_dims), sort_keys=True)}",
            f"    checked against {check.get('against', '?')} on {check.get('samples', '?')} reference inputs: {outputs}"]


def _llm_lines(llm) -> list[str]:
    """A decoder LM's layout, cache and memory plan, as `chipfit inspect` shows it."""
    d, plan = llm.decoder, llm.memory_plan
    mib, gib = 2**20, 2**30
    sliding = (f"; sliding window {d.sliding_window} on layers {', '.join(map(str, d.sliding_layers))}"
               if d.sliding_window else "")
    capacity = f"{plan.capacity_bytes / gib:.2f} GiB" if plan.capacity_bytes else "unknown memory"
    return [
        f"  decoder:   {d.architecture} ({d.model_type}): {d.layers} layers, hidden {d.hidden_size}, {d.heads} heads, "
        f"vocab {d.vocab_size}, {d.parameters / 1e6:.1f} M parameters" + (", tied embeddings" if d.tied_embeddings else ""),
        f"  kv cache:  {d.layers} layers x {d.kv_heads} kv heads x {d.head_dim}"
        + (f"+{d.value_head_dim}" if d.value_head_dim != d.head_dim else "") + f" head dim x "
        f"{plan.kv_bytes_per_element} B = {d.kv_bytes_per_token(plan.kv_bytes_per_element) / 1024:.1f} KiB per token"
        + sliding,
        f"  form:      {llm.cache_form} cache, context {llm.context} tokens, programs {', '.join(llm.programs)}"
        + (f", prefill in chunks of {llm.prefill_chunk}" if llm.prefill_chunk else "") + f"; runs in {llm.runtime}",
        f"  weights:   " + ", ".join(f"{k} {v}" for k, v in llm.weight_precisions.items()),
        f"  memory:    weights {plan.weight_bytes / mib:.1f} MiB + KV cache {plan.kv_cache_bytes / mib:.1f} MiB "
        f"+ workspace {plan.workspace_bytes / mib:.1f} MiB = {plan.total_bytes / mib:.1f} MiB of {capacity} "
        f"({'fits' if plan.fits else 'DOES NOT FIT'}); largest context that fits: {plan.max_context_that_fits}"
        f" ({plan.basis})",
    ] + [f"  also:      {o['name']} form: {o['cache_form']} cache, programs {', '.join(o['programs'])}, runs in "
         f"{o['runtime']}; {o['numerics'].get('status')}: "
         f"{(o['numerics'].get('generation') or {}).get('summary') or o['numerics'].get('reason', '')}"
         for o in llm.other_forms] + _vision_lines(llm.vision) + _weight_choice_lines(llm.weight_choice) + (
        ["  remote code: trusted (--trust-remote-code)"] if llm.trust_remote_code else [])


def _vision_lines(vision) -> list[str]:
    """A vision-language artifact's parts, its vision encoder and the image-token budget."""
    if vision is None:
        return []
    v = vision.spec
    settings = ", ".join(f"{k} {val}" for k, val in vision.runtime_settings.items())
    return [f"  parts:     " + ", ".join(f"{part} {file}" for part, file in vision.files.items()),
            f"  vision:    {v.family} encoder: {v.layers} blocks, width {v.hidden_size}, patch {v.patch_size}, merge "
            f"{v.merge_size}x{v.merge_size}, {v.encoder_parameters / 1e6:.2f} M parameters at "
            f"{vision.encoder_precision}",
            f"  images:    {v.min_image_tokens}..{vision.image_tokens_per_image} tokens each ({v.min_pixels}.."
            f"{v.max_pixels} pixels); the context holds {vision.images_per_context} of the largest"
            + (f"; the runtime is set to {settings}" if settings else "")]


def _weight_choice_lines(choice) -> list[str]:
    """Each weight quantization method's perplexity beside the float model's, and which one shipped."""
    if not choice:
        return []
    lines = [f"  weight methods: perplexity on {choice['held_out']} (float {choice['reference_perplexity']:.3f}); "
             f"calibrated on {choice['calibration']}"]
    for v in choice["variants"]:
        ppl = f"{v['perplexity']:.3f}" if v.get("perplexity") is not None else "-"
        share = v.get("int8_share") or 0.0
        name = v["method"] + (f" +{share:.0%} int8" if 0 < share < 1 else " -> all int8" if share >= 1 else "")
        chosen = v["method"] == choice["chosen"] and share == (choice.get("int8_share") or 0.0)
        lines.append(f"    {'*' if chosen else ' '} {name:<30} perplexity {ppl}, "
                     f"agreement {v.get('token_agreement')}, cos {v.get('min_cosine')}: {v['status']}"
                     + (f" ({v['reason']})" if v.get("reason") else ""))
    budget = choice.get("budget")
    if budget and budget.get("checked", True):
        lines.append(f"  accuracy budget {budget['limit']} ({budget['metric']}): {budget['increase']} met by "
                     f"{budget['met_by']}" + (f"; int4 alone {budget['int4_increase']}" if "int4_increase" in budget
                                              else "")
                     + (f"; int8: {', '.join(budget['int8_layers'][:8])}" if budget.get("int8_layers") else ""))
    elif budget:
        lines.append(f"  accuracy budget {budget['limit']}: not checked ({budget['why']})")
    return lines



def _generation_lines(generation) -> list[str]:
    lines = [f"    generation: {generation.get('summary', '')}"]
    for step in generation.get("prompts", [])[:8]:
        lines.append(f"      prompt {step.get('prompt')!r}: {step.get('matched')} of {step.get('tokens')} greedy tokens "
                     f"equal the reference" + (f"; ties at steps {step['ties']}" if step.get("ties") else ""))
    return lines
