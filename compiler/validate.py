"""`chipfit targets validate`: check a spec file the way a vendor needs before shipping it.

Beyond the loader's schema checks (unknown or missing keys, figures without sources, non-positive
figures), it checks what only the installed chipfit knows: that each backend the spec names is
registered and accepts the spec's options, that every declared fusion exists, that each
precision the spec declares is built by one of its backends, and that this machine has what each backend needs
to build for it (cross compiler, a CPU name its code generator knows).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compiler.backends import backend_registry
from targets.registry import compute_unit
from compiler.errors import UsageError
from compiler.passes.fusion import fusion_passes
from targets.spec import TargetError, TargetSpec, load_spec


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def validate_spec(path: str | Path) -> tuple[TargetSpec | None, list[Check]]:
    checks: list[Check] = []
    try:
        spec = load_spec(path)
    except TargetError as exc:
        return None, [Check("schema", False, str(exc))]
    checks.append(Check("schema", True, f"{spec.id}: keys, types, figures and their sources"))
    registry = backend_registry()
    builds: set[str] = set()
    for name in spec.backends:
        try:
            backend = registry.get(name)
        except TargetError as exc:
            checks.append(Check(f"backend {name}", False, f"{exc}. Install the plugin that provides it, or fix the name"))
            continue
        try:
            backend.check_options(spec)
            checks.append(Check(f"backend {name}", True, f"registered (API {backend.api_version}); options accepted"))
            builds.update(backend.capabilities.precisions)
            builds.update(backend.capabilities.decoder_precisions)  # a precision only decoder LMs take counts too
        except TargetError as exc:
            checks.append(Check(f"backend {name}", False, str(exc)))
            continue
        problems = backend.check_toolchain(spec)
        checks += [Check(f"toolchain {name}", False, problem) for problem in problems]
        if not problems:
            checks.append(Check(f"toolchain {name}", True, "what the build needs is here"))
    missing = [p for p in spec.precisions if builds and p not in builds]
    checks.append(Check("precisions", not missing,
                        "every declared precision has a backend" if not missing else
                        f"no backend of {list(spec.backends)} builds {missing}: drop them from supports.precisions"))
    try:
        fusion_passes(list(spec.fusions), ("com.microsoft",), spec.source_file)
        checks.append(Check("fusion", True, f"{len(spec.fusions)} declared fusion rule(s) exist"))
    except UsageError as exc:
        checks.append(Check("fusion", False, str(exc)))
    unknown = [k for k, v in spec.hardware.figures.items() if v == "unknown" or (isinstance(v, dict) and not any(
        isinstance(x, (int, float)) for x in v.values()))]
    checks.append(Check("figures", True, "all known" if not unknown else
                        f"unknown (the estimate model will say so): {', '.join(unknown)}"))
    for unit in spec.hardware.units.values():
        runs = [b for b in spec.backends if spec.unit_for(b, compute_unit(registry, b)) is unit]
        checks.append(Check(f"unit {unit.name}", True, f"{unit.kind}; runs {', '.join(runs) or 'no backend of this target'}"))
    return spec, checks
