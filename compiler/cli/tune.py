"""``chipfit tune``: kernel tuning through a backend that offers it."""

from __future__ import annotations

import argparse

from compiler.errors import UsageError
from compiler.cli.generate import host_arch
from compiler.cli.text import print_progress_line



def cmd_tune(args: argparse.Namespace) -> int:
    """Tune a model's kernels for a target with its backend's tuner; later builds for that target reuse the records."""
    from compiler.frontend import load_model
    from targets.backend import Device
    from targets.registry import backend_registry, target_registry

    if args.trials < 1:
        raise UsageError(f"--trials {args.trials}: must be at least 1")
    target = target_registry().get(args.target)
    backends = backend_registry()
    tuners = [backends.get(name) for name in target.backends if backends.get(name).capabilities.tunable]
    if not tuners:
        raise UsageError(f"-t {target.id}: none of its backends ({', '.join(target.backends)}) has a tuner; "
                         "TVM's does (a target with backends = [\"tvm\", ...])")
    device = None
    if args.rpc:
        if ":" not in args.rpc:
            raise UsageError(f"--rpc {args.rpc}: give the tracker as HOST:PORT")
        key = args.key or target.reach.rpc_key
        if not key:
            raise UsageError(f"--rpc given but no --key, and target {target.id} names no rpc_key")
        device = Device(args.rpc, key)
    elif target.reach.kind != "local" or target.reach.arch and target.reach.arch != host_arch():
        raise UsageError(f"-t {target.id}: its kernels run on {target.reach.arch or target.reach.kind}, not this CPU: "
                         "tune on the device with --rpc HOST:PORT [--key KEY]")
    progress = (lambda m: None) if args.quiet else print_progress_line
    from targets.signature import parse_input_override

    overrides = [parse_input_override(text) for text in args.input]
    model = load_model(args.model, overrides)
    for backend in tuners:
        result = backend.tune(model, target, args.trials, device, progress)
        print(f"{target.id} ({backend.name}): {result.tasks} kernels, {result.trials} trials in "
              f"{result.seconds:.0f} s on {result.runner}; {result.records} records kept in {result.database}")
    print("later builds for this target apply them (the manifest's tvm-schedules pass lists the kernels)")
    return 0
