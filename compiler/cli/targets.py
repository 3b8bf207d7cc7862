"""``chipfit targets``: list, show and validate targets, and the spec reference."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compiler.errors import UsageError
from targets.spec import TargetError, TargetSpec
from compiler.cli.text import figure, table



def cmd_targets(args: argparse.Namespace) -> int:
    from targets.registry import target_registry

    if args.action == "validate":
        from compiler.validate import validate_spec

        spec, checks = validate_spec(args.target)
        for check in checks:
            print(f"{'ok  ' if check.ok else 'FAIL'}  {check.name:<20} {check.detail}")
        bad = [c for c in checks if not c.ok]
        print(f"\n{args.target}: " + ("valid" if not bad else f"{len(bad)} problem(s)"))
        return 1 if bad else 0
    if args.action == "reference":
        from compiler import spec_reference

        backends = spec_reference.builtin_backends()
        if not args.write:
            print(spec_reference.generated(backends))
            return 0
        doc = Path(args.write)
        try:
            updated = spec_reference.update(doc.read_text(encoding="utf-8"), backends)
        except (OSError, ValueError) as exc:
            raise UsageError(f"{doc}: {exc}") from exc
        from targets.files import write_text_atomic

        write_text_atomic(doc, updated)
        print(f"{doc}: generated part updated")
        return 0
    registry = target_registry()
    if args.action == "show":
        spec = registry.get(args.target)
        if args.json:
            print(json.dumps(spec.to_dict() | {"spec_digest": spec.digest, "spec_file": spec.source_file}, indent=2))
        else:
            print(_describe_target(spec))
        return 0
    specs, failed = registry.load_all()
    broken = _broken_backends(specs.values())
    for target_id, errors in broken.items():
        failed[target_id] = f"target {target_id!r} is broken: " + "; ".join(errors)
    if args.json:
        print(json.dumps({"targets": [s.to_dict() | {"spec_digest": s.digest, "broken": broken.get(s.id, [])}
                                      for s in specs.values()], "load_errors": failed}, indent=2))
    else:
        rows = [
            (s.id, s.name, ", ".join(s.backends), s.default_precision, ", ".join(s.precisions),
             s.reach.kind + (f" ({s.reach.rpc_key})" if s.reach.rpc_key else ""),
             "BROKEN (see below)" if s.id in broken else "ok")
            for s in specs.values()
        ]
        print(table(("target", "name", "backends", "default", "precisions", "reach", "status"), rows))
        for name, error in failed.items():
            print(f"error: {error}", file=sys.stderr)
    return 2 if failed else 0



def _broken_backends(specs) -> dict[str, list[str]]:
    """Target id -> why each of its backends that does not load fails (a plugin's import error, an old API)."""
    from targets.registry import PluginLoadError, backend_registry

    backends = backend_registry()
    errors: dict[str, str] = {}
    broken: dict[str, list[str]] = {}
    for spec in specs:
        for name in spec.backends:
            if name not in errors:
                try:
                    backends.get(name)
                    errors[name] = ""
                except (PluginLoadError, TargetError) as exc:
                    errors[name] = f"backend {name!r} does not load: {exc}"
            if errors[name]:
                broken.setdefault(spec.id, []).append(errors[name])
    return broken



def _describe_target(spec: TargetSpec) -> str:
    from targets.isa import ARITHMETIC

    hw = spec.hardware
    lines = [
        f"{spec.id}: {spec.name} ({spec.vendor})",
        f"  {spec.description}" if spec.description else "",
        f"  spec file: {spec.source_file}",
        f"  spec digest: {spec.digest}",
        f"  backends (preferred first): {', '.join(spec.backends)}" + ("; builds all of them" if spec.build_all_backends else ""),
        f"  precisions: {', '.join(spec.precisions)} (default {spec.default_precision})",
        f"  reach: {spec.reach.kind}" + (f", arch {spec.reach.arch}" if spec.reach.arch else "")
        + (f", tracker key {spec.reach.rpc_key}" if spec.reach.rpc_key else "")
        + (f" ({spec.reach.reason})" if spec.reach.reason else ""),
        f"  isa: {spec.isa.label}; int8 arithmetic: {spec.isa.int8_arithmetic} ({ARITHMETIC[spec.isa.int8_arithmetic]})",
    ]
    if spec.id == "host" or spec.reach.kind == "local":
        from targets.host import detect_host

        facts = detect_host().facts()
        lines.append(f"  this machine: {facts.vendor} {facts.cpu}, {facts.arch}, {facts.cores} cores, "
                     f"{facts.memory_gb} GB; isa {', '.join(facts.isa) or 'baseline'}; int8 arithmetic "
                     f"{facts.int8_arithmetic}")
    lines += ["", "backend options:"]
    for backend, options in spec.backend_options.items():
        lines.append(f"  [{backend}]")
        lines.extend(f"    {k} = {json.dumps(v)}" for k, v in options.items())
    lines += ["", "verification tolerances:"]
    for precision, tol in spec.tolerances.items():
        lines.append(f"  {precision}: atol {tol.atol:g}, rtol {tol.rtol:g}, cosine >= {tol.min_cosine:g}")
    lines += ["", f"hardware ({hw.chip}): {hw.compute}"]
    rows = []
    for key, value in hw.figures.items():
        rows.append((key, figure(value), hw.kind_of(key) if key in hw.sources else "-",
                     "; ".join(hw.sources.get(key, ())) or "-"))
    lines += ["  " + line for line in table(("figure", "value", "kind", "source"), rows).splitlines()]
    if hw.notes:
        lines += ["", f"notes: {hw.notes}"]
    return "\n".join(line for line in lines if line is not None)
