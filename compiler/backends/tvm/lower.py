"""Lower through TVM Relax to a shared library (cross-compiled where the target says so)."""

from __future__ import annotations

import difflib
import re
import shutil
from pathlib import Path
from typing import Any

import onnx

from compiler.backends import Lowered
from compiler.errors import BuildError, UnsupportedOpError
from compiler.frontend import concretize
from targets.signature import Signature
from targets.model import TracedModel
from targets.spec import TargetSpec

ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm", 0xF3: "riscv"}
_ONNX_UNSUPPORTED = re.compile(r"operators are not supported for frontend ONNX: ([\w, ]+)")
_TORCH_UNSUPPORTED = re.compile(r"Unsupported function types? \[([^\]]*)\]")


def elf_machine(path: Path) -> str:
    """The machine a shared library is built for, from its ELF header (e_machine)."""
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        return "not ELF"
    code = int.from_bytes(header[18:20], "little" if header[5] == 1 else "big")
    return ELF_MACHINES.get(code, f"e_machine {code:#x}")


def import_torch(model: TracedModel):
    from tvm.relax.frontend.torch import from_exported_program

    try:
        return from_exported_program(model.exported_program, keep_params_as_input=False)
    except Exception as exc:
        match = _TORCH_UNSUPPORTED.search(str(exc))
        if match:
            op = match.group(1).split(",")[0].strip(" '\"")
            raise UnsupportedOpError("tvm", op, _torch_node(model, op), "TVM's torch importer has no converter") from exc
        raise


def _torch_node(model: TracedModel, op: str) -> str:
    for node in model.exported_program.graph.nodes:
        if node.op == "call_function" and str(node.target).endswith(op.split(".")[0]):
            return node.name
    return "?"


def import_onnx(graph: onnx.ModelProto):
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(graph, keep_params_in_input=False)
    except Exception as exc:
        match = _ONNX_UNSUPPORTED.search(str(exc))
        if match:
            op = match.group(1).split(",")[0].strip()
            node = next((n.name or n.output[0] for n in graph.graph.node if n.op_type == op), "?")
            raise UnsupportedOpError("tvm", op, node, "TVM's ONNX importer has no converter") from exc
        raise


def debian_package(compiler: str) -> str:
    """The Debian/Ubuntu package of a GNU cross compiler driver: ``riscv64-linux-gnu-g++`` -> ``g++-riscv64-linux-gnu``."""
    name = Path(compiler).name
    for tool in ("g++", "gcc", "c++"):
        if name.endswith("-" + tool):
            return f"{tool}-{name[: -len(tool) - 1]}"
    return name


def _llvm_features(triple: str) -> set[str]:
    """Every feature name some CPU LLVM knows for ``triple`` has: what an ``mattr`` may name."""
    import tvm
    from tvm.target import codegen

    base = tvm.target.Target({"kind": "llvm", "mtriple": triple})
    features: set[str] = set()
    for cpu in codegen.llvm_get_cpu_archlist(base):
        features |= set(codegen.llvm_get_cpu_features(tvm.target.Target({"kind": "llvm", "mtriple": triple, "mcpu": cpu})))
    return features


def toolchain_problems(target: TargetSpec, options: dict[str, Any]) -> tuple[str, ...]:
    """What this machine lacks to build ``target``: the cross compiler, and an ``mcpu`` or ``mattr`` that LLVM does
    not know for the triple (LLVM would only warn and build for a generic CPU)."""
    from tvm.target import codegen

    problems = []
    cross = options["cross_compiler"]
    if cross and shutil.which(cross) is None:
        problems.append(f"target {target.id} cross-compiles with {cross!r}, which is not on PATH; on Debian/Ubuntu "
                        f"install it with `apt-get install {debian_package(cross)}`")
    spec = options["target"]
    if spec.get("kind") != "llvm":
        return tuple(problems)
    triple = spec.get("mtriple") or codegen.llvm_get_system_triple()
    where = f"{target.source_file}: backend_options.tvm.target"
    mcpu = spec.get("mcpu")
    if mcpu and not codegen.llvm_is_valid_cpu(mcpu, triple):
        import tvm

        known = codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple}))
        close = difflib.get_close_matches(mcpu, known, n=3, cutoff=0.5)
        problems.append(f"{where}.mcpu {mcpu!r} is not a CPU LLVM knows for {triple} (it would build for a generic "
                        f"CPU)" + (f"; did you mean {' or '.join(map(repr, close))}?" if close else "")
                        + f" Known: {', '.join(sorted(known))}")
    attrs = spec.get("mattr") or []
    attrs = attrs.split(",") if isinstance(attrs, str) else list(attrs)
    if attrs:
        known_features = _llvm_features(triple)
        unknown = [a for a in attrs if a.lstrip("+-") not in known_features]
        if unknown:
            problems.append(f"{where}.mattr {unknown} names features LLVM does not know for {triple}; write them as "
                            "LLVM spells them, e.g. '+v' (riscv64), '+neon' (aarch64), '+avx2' (x86_64)")
    return tuple(problems)


def check_cross_compiler(target: TargetSpec, options: dict[str, Any]) -> None:
    problems = toolchain_problems(target, options)
    if problems:
        raise BuildError("; ".join(problems))


def compile_module(mod, target_dict: dict[str, Any], pipeline: str, tuned: bool = False, measure: bool = False):
    """(executable, schedule record): the "zero" pipeline fuses, then the kernels get their schedules (kept tuning
    records where ``tuned`` and the target has them, then TVM's default CPU rules). Where ``measure`` (the target's
    code runs on this CPU), the default rules stay only if the program measures faster with them."""
    import tvm
    from tvm import relax

    from compiler.backends.tvm.schedules import schedule
    from compiler.backends.tvm.tuning import database_digest, database_dir

    target = tvm.target.Target(target_dict)
    record: dict[str, Any] = {"name": "tvm-schedules", "applied": False, "reason": f"pipeline {pipeline!r} does not fuse"}
    with target:
        if pipeline != "zero":
            return tvm.compile(mod, target=target), record
        fused = relax.get_pipeline("zero")(mod)
        database = database_dir(target_dict) if tuned and database_digest(target_dict) else None
        scheduled, record = schedule(fused, database)
        executable = tvm.compile(scheduled, target=target)
        if not (measure and record["default_rules_applied"]):
            if record["default_rules_applied"]:
                record["default_rules_check"] = "not measured: the target's code does not run on this CPU"
            return executable, record
        plain_mod, plain_record = schedule(fused, database, default_rules=False)
        plain = tvm.compile(plain_mod, target=target)
    from tvm_ffi.structural import structural_hash

    from compiler.speed import faster, race, remember
    from targets.files import utc_now
    from targets.host import detect_host

    def measure() -> dict:
        timed = race({"rules": _vm_call(executable, mod), "plain": _vm_call(plain, mod)}, rounds=3, budget_s=1.0)
        return {"with_ms": round(timed["rules"].median_ms, 4), "without_ms": round(timed["plain"].median_ms, 4),
                "when": utc_now()}

    host = detect_host()
    key = {"module": str(structural_hash(fused)), "target": target_dict, "cpu": host.model_name,
           "cores": host.cores, "tvm": tvm.__version__}
    figures, remembered = remember("tvm-default-rules", key, measure)
    kept = faster(figures["with_ms"], figures["without_ms"])
    check = {"kept": kept, "with_ms": figures["with_ms"], "without_ms": figures["without_ms"],
             "method": "measured on this CPU, interleaved rounds; kept only if at least 3% faster"
                       + (f" (decided on {figures['when']} and kept for this program on this machine)"
                          if remembered else "")}
    if not remembered:
        # an executable that ran in a VM exports different bytes than a fresh one: ship a fresh compile, so the
        # build that measured gives the same library as every later build that reuses its decision
        with target:
            executable, plain = tvm.compile(scheduled, target=target), tvm.compile(plain_mod, target=target)
    if kept:
        return executable, {**record, "default_rules_check": check}
    return plain, {**plain_record, "default_rules_check": check,
                   "default_rules_dropped": record["default_rules_applied"],
                   **({"default_rules_failed": record["default_rules_failed"]}
                      if "default_rules_failed" in record else {})}


def _vm_call(executable, mod):
    """A call of the program's ``main`` on zero inputs (the timing does not depend on values)."""
    import numpy as np
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(executable, tvm.cpu())
    params = mod["main"].params
    def size(dim) -> int:
        try:
            return int(dim)
        except (TypeError, ValueError):
            return 1  # a symbolic dimension (the batch): time one sample

    inputs = [tvm.runtime.tensor(np.zeros([size(d) for d in p.ty.shape], str(p.ty.dtype))) for p in params]
    return lambda: vm["main"](*inputs)


def _where(exc: BaseException) -> str:
    """Where in TVM an error without a useful message was raised: the innermost TVM frame (its pass or rule) and
    the TIR/Relax function being transformed, when the frames hold one."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if "/tvm/" in f.filename.replace("\\", "/")]
    if not frames:
        return ""
    inner = frames[-1]
    module = inner.filename.replace("\\", "/").split("/tvm/")[-1].removesuffix(".py").replace("/", ".")
    function = ""
    tb = exc.__traceback__
    while tb is not None:  # the innermost frame that has a function ("func" / "mod" with a name) in its locals
        for key in ("func", "prim_func", "function"):
            candidate = tb.tb_frame.f_locals.get(key)
            name = getattr(getattr(candidate, "attrs", None), "get", lambda *_: None)("global_symbol")
            if name:
                function = str(name)
        tb = tb.tb_next
    return f" (in tvm.{module}.{inner.name}, line {inner.lineno}" + (f", function {function}" if function else "") + ")"


def lower(
    model: TracedModel,
    target: TargetSpec,
    precision: str,
    workdir: Path,
    options: dict[str, Any],
) -> Lowered:
    target_dict = dict(options["target"])
    cross = options["cross_compiler"]
    check_cross_compiler(target, options)
    notes: list[str] = []
    passes: list[dict[str, Any]] = []
    schedules: list[dict[str, Any]] = []
    from compiler.backends import host_mismatch
    from targets.host import detect_host

    runs_here = not cross and host_mismatch(target, detect_host()) is None

    def build(m: TracedModel):
        """Import ``m`` (torch route first where it applies) and compile it; returns (executable, route)."""
        route = "onnx -> tvm.relax.frontend.onnx"
        mod = None
        if precision == "fp32" and m.exported_program is not None:
            try:
                mod, route = import_torch(m), "torch.export -> tvm.relax.frontend.torch"
            except UnsupportedOpError:
                raise
            except Exception as exc:  # TVM's torch importer misses some programs; the ONNX route often works
                notes.append(f"TVM torch importer failed ({type(exc).__name__}: {str(exc)[:200]}); used the ONNX route")
        if mod is None:
            if m.graph_precision != precision:
                raise BuildError(f"tvm lowers the {precision} graph, but was given a {m.graph_precision} one")
            passes[:] = list(m.passes)
            mod = import_onnx(m.onnx_model)
        executable, record = compile_module(mod, target_dict, options["pipeline"], options["tuning_database"] != "none",
                                      measure=runs_here)
        schedules[:] = [record]
        return executable, route

    def failed(exc: Exception) -> BuildError:
        return BuildError(f"TVM could not compile {model.name} for {target.id}: {type(exc).__name__}: "
                          f"{str(exc).strip() or '(no message)'}{_where(exc)}")

    signature: Signature = model.signature
    try:
        executable, route = build(model)
    except UnsupportedOpError:
        raise
    except Exception as exc:
        if model.signature.is_static:
            raise failed(exc) from exc
        # Symbolic dims are the usual cause (see TOOLCHAIN-FACTS): retry at static shapes.
        notes.append(f"symbolic dims {model.signature.symbolic_dims()} did not compile ({type(exc).__name__}); bound to 1")
        model = concretize(model)
        signature = model.signature
        try:
            executable, route = build(model)
        except UnsupportedOpError:
            raise
        except Exception as exc2:
            raise failed(exc2) from exc2
    library = workdir / "model.so"
    try:
        if cross:
            executable.export_library(str(library), cc=cross)
        else:
            executable.export_library(str(library))
    except Exception as exc:
        raise BuildError(f"linking the TVM library for {target.id} failed: {exc}") from exc
    passes.append({"name": f"tvm-relax-pipeline-{options['pipeline']}", "importer": route})
    passes.extend(schedules)
    resolved = dict(options)
    resolved["elf_machine"] = elf_machine(library)
    return Lowered(
        files=("model.so",),
        signature=signature,
        options=resolved,
        passes=tuple(passes),
        notes=tuple(notes),
    )
