"""``chipfit toolchain install NAME`` and ``chipfit toolchain list``: the environments of isolated backends and of
front ends that cannot share chipfit's (optimum's exporters)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compiler.errors import UsageError
from compiler.isolated.environment import Environment, inspect_environment, install_environment, toolchains_dir


def _environments() -> tuple[dict[str, Environment], dict[str, str]]:
    """The environments chipfit can make: each registered backend's that declares one (other backends run in
    chipfit's own) and each front end's; and the backends that failed to load."""
    from compiler.frontend.optimum import ENVIRONMENT as OPTIMUM
    from targets.registry import backend_registry

    loaded, failed = backend_registry().load_all()
    environments = {name: b.environment for name, b in loaded.items() if b.capabilities.isolated}
    environments[OPTIMUM.name] = OPTIMUM
    return dict(sorted(environments.items())), failed


def cmd_toolchain(args: argparse.Namespace) -> int:
    root = Path(args.dir) if args.dir else toolchains_dir()
    isolated, failed = _environments()
    if args.action == "install":
        if not args.backend:
            raise UsageError("toolchain install needs a name; environments: " + ", ".join(isolated))
        if args.backend not in isolated:
            hint = f" ({failed[args.backend]})" if args.backend in failed else ""
            raise UsageError(f"{args.backend!r} declares no isolated environment{hint}; those that do: "
                             f"{', '.join(isolated)} (is a plugin off the Python path?)")
        env = isolated[args.backend]
        progress = (lambda m: None) if args.quiet else (lambda m: print(f"toolchain: {m}", file=sys.stderr, flush=True))
        state = install_environment(env, root, force=args.force, progress=progress)
        print(f"{args.backend}: complete at {state.path} ({len(state.packages)} packages, Python {state.python})")
        return 0
    incomplete = 0
    for name, environment in isolated.items():
        state = inspect_environment(environment, root)
        status = "complete" if state.complete else "INCOMPLETE: " + "; ".join(state.problems)
        incomplete += not state.complete
        print(f"{name}: {status}\n  path: {state.path}" + (f"\n  python: {state.python}" if state.python else ""))
        shown = environment.reported if not args.all else tuple(state.packages)
        for package in shown:
            print(f"  {package}: {state.packages.get(package, 'missing')}")
        if state.exists and not args.all:
            print(f"  ({len(state.packages)} packages in all; --all lists them)")
        if not state.complete:
            print(f"  fix: chipfit toolchain install {name}")
    for name, error in failed.items():
        print(f"error: backend {name!r} failed to load: {error}", file=sys.stderr)
    return 1 if incomplete else 0  # another plugin that does not load is reported, not this command's failure


def add_parser(sub) -> None:
    tc = sub.add_parser("toolchain", help="isolated environments (vendor SDKs, optimum's exporters): install one, or "
                                          "list them")
    tc.add_argument("action", choices=("install", "list"))
    tc.add_argument("backend", nargs="?", metavar="NAME",
                    help="install: the environment to make (a backend's name, or optimum)")
    tc.add_argument("--dir", help="where environments live (default: $CHIPFIT_TOOLCHAINS_DIR, else "
                                  "<chipfit cache dir>/toolchains); builds read $CHIPFIT_TOOLCHAINS_DIR")
    tc.add_argument("--force", action="store_true", help="install: make it again even if complete")
    tc.add_argument("--all", action="store_true", help="list: every package of each environment")
    tc.add_argument("-q", "--quiet", action="store_true")
    tc.set_defaults(func=cmd_toolchain)
