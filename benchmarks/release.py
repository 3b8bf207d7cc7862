"""Cold against warm release time: the bundled example for every built-in target.

    .venv/bin/python benchmarks/release.py

Runs `chipfit release` as a user would (a fresh process each time), on a release file listing the
example for every registered built-in target at its default precision:

* the peer: one `chipfit build example -t all` (no cache, one process, the same artifacts);
* cold: an empty cache, one and two jobs;
* warm: the cache filled, into an empty dist/ (copies verified entries) and into the same dist/
  (finds them in place);
* with profiling: the first profile of a dist/, a repeat that keeps the measurements it already has, and a
  warm release into an empty dist/ (a CI job's), which takes the profiles kept in the cache;
* executors (with ``distributed`` installed): cold and warm, the local executor (two worker processes) against
  ``--executor dask`` (a local cluster of two Dask workers on 127.0.0.1, started by the run), the cache a
  folder and, for Dask, a ``file://`` URL (the object-store code path).

Prints wall seconds and ratios (target for warm: a few seconds, at least 10x faster than cold).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHIPFIT = [sys.executable, "-m", "compiler.cli"]
TARGETS = ["host", "x86-64-avx2", "arm64-cortex-a76", "apple-a17", "snapdragon-8gen3", "intel-npu-3720"]


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(CHIPFIT + args, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"chipfit {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="chipfit-release-bench-") as tmp:
        root = Path(tmp)
        release = root / "release.toml"
        release.write_text(f"name = \"bench\"\ntargets = {TARGETS!r}\n[[model]]\npath = \"example\"\n"
                           "[profile]\nruns = 200\nbudget_s = 5.0\n")

        def run(dist: str, cache: str, *extra: str) -> float:
            return timed(["release", str(release), "-o", str(root / dist), "--cache", str(root / cache), "-q", *extra])

        rows = [("peer: chipfit build example -t all (no cache)",
                 timed(["build", "example", "-t", "all", "-o", str(root / "build"), "-q"]))]
        rows.append(("release cold, --jobs 1", run("d1", "c1", "--no-profile")))
        rows.append(("release cold, --jobs 2", run("d2", "c2", "--no-profile", "--jobs", "2")))
        rows.append(("release warm, empty dist/", run("d3", "c2", "--no-profile")))
        rows.append(("release warm, same dist/", run("d3", "c2", "--no-profile")))
        rows.append(("release warm + first profile", run("d4", "c2")))
        rows.append(("release warm + repeat profile (kept)", run("d4", "c2")))
        # what every CI job does: the cache holds artifacts and their profiles, dist/ starts empty
        rows.append(("release warm + profile, empty dist/ (CI)", run("d5", "c2")))
        cold = rows[2][1]
        try:
            import distributed  # noqa: F401

            rows.append(("executor local -j2, cold", run("e1", "x1", "--no-profile", "-j", "2")))
            rows.append(("executor dask 2 workers, cold", run("e2", "x2", "--no-profile", "-j", "2",
                                                             "--executor", "dask")))
            rows.append(("executor dask 2 workers, cold, file:// cache",
                         timed(["release", str(release), "-o", str(root / "e3"), "--cache", f"file://{root / 'x3'}",
                                "-q", "--no-profile", "-j", "2", "--executor", "dask"])))
            rows.append(("executor local -j2, warm, empty dist/", run("e4", "x1", "--no-profile", "-j", "2")))
            rows.append(("executor dask, warm, empty dist/", run("e5", "x2", "--no-profile", "-j", "2",
                                                                "--executor", "dask")))
        except ImportError:
            print("(distributed is not installed: no executor rows; pip install 'chipfit[dask]')")
        print(f"{len(TARGETS)} targets, example model; {root}")
        print(f"{'run':<42} {'wall s':>8} {'vs cold -j2':>12}")
        for name, seconds in rows:
            print(f"{name:<42} {seconds:8.2f} {seconds / cold:11.3f}x")
        print(f"\nwarm/cold speed-up: {cold / rows[4][1]:.1f}x (same dist), {cold / rows[3][1]:.1f}x (empty dist); "
              f"release cold -j2 vs the peer: {rows[0][1] / cold:.2f}x")


if __name__ == "__main__":
    main()
