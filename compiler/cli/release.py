"""``chipfit release`` and ``chipfit cache``: many models x targets, cached, and the build cache itself."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from compiler.errors import UsageError
from compiler.cli.text import print_progress_line, size, table



def cmd_release(args: argparse.Namespace) -> int:
    from compiler.release.cache import default_cache_dir
    from compiler.release.config import load_release
    from compiler.release.driver import SUMMARY_NAME, ReleaseOptions, dry_run, release, temporary_cache
    from compiler.release.summary import SUMMARY_HEADERS, summary_rows
    from targets.release_index import INDEX_NAME, ReleaseIndex

    config = load_release(args.release)
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be at least 1")
    from compiler.release.cache import is_url

    if args.scheduler and args.executor != "dask":
        raise UsageError("--scheduler is for --executor dask")
    cache_dir = (temporary_cache() if args.no_cache else (args.cache if is_url(args.cache) else Path(args.cache))
                 if args.cache else default_cache_dir())
    if args.executor == "dask" and args.scheduler and args.no_cache:
        raise UsageError("--no-cache with --scheduler: the cluster's workers cannot reach a throwaway cache on this "
                         "machine; give --cache a shared path or URL")
    progress = (lambda m: None) if args.quiet else print_progress_line
    from compiler.release.cache import default_cache_max_gb

    max_gb = args.cache_max_gb if args.cache_max_gb is not None else default_cache_max_gb()
    if max_gb <= 0:
        raise UsageError(f"--cache-max-gb {max_gb}: must be positive")
    options = ReleaseOptions(out_dir=Path(args.output).absolute(), cache_dir=cache_dir, jobs=args.jobs,
                             check_reproducible=args.check_reproducible,
                             profile=not args.no_profile,
                             cell_timeout_s=args.cell_timeout, cache_max_bytes=int(max_gb * 2**30),
                             executor=args.executor, scheduler=args.scheduler)
    if args.dry_run:
        rows = [(c.model.name, c.precision, c.target.id, c.key[:12], what) for c, what in dry_run(config, options)]
        print(table(("model", "precision", "target", "cache key", "would"), rows))
        return 0
    with contextlib.redirect_stdout(sys.stderr):
        report = release(config, options, progress)
    index = ReleaseIndex.from_dict(json.loads((options.out_dir / INDEX_NAME).read_text()), str(options.out_dir / INDEX_NAME))
    if args.json:
        print(json.dumps(index.to_dict(), indent=2))
    else:
        print(f"\nrelease {config.name} -> {options.out_dir}")
        print(table(SUMMARY_HEADERS, summary_rows(index)))
        s = index.summary
        print(f"\n{s['cells']} cells: {s['built']} built, {s['cached']} from the cache, {s['partial']} partial, "
              f"{s['failed']} failed verification, {s['error']} could not be built; {index.seconds} s")
        print(f"index: {options.out_dir / INDEX_NAME}; summary: {options.out_dir / SUMMARY_NAME}")
    for outcome in report.outcomes:
        if not outcome.ok:
            detail = outcome.message or "; ".join(c.detail for c in outcome.reproducible or [] if not c.ok)
            print(f"error: {outcome.cell.label}: {detail}" + (f" (log: {outcome.log})" if outcome.log else ""),
                  file=sys.stderr)
    for path, error in report.profile_errors.items():
        print(f"error: profile {path}: {error}", file=sys.stderr)
    if args.no_cache:
        import shutil

        shutil.rmtree(cache_dir, ignore_errors=True)
    return 0 if report.ok else 1



def cmd_cache(args: argparse.Namespace) -> int:
    import time

    from compiler.release.cache import BuildCache, default_cache_dir

    from compiler.release.cache import is_url

    if args.cache and is_url(args.cache):
        raise UsageError(f"cache {args.action} --cache {args.cache}: works on a cache folder; a URL's store keeps "
                         "entries by its own retention policy (e.g. an S3 lifecycle rule)")
    cache = BuildCache(Path(args.cache) if args.cache else default_cache_dir())
    if args.action == "prune":
        if args.max_age_days is None and args.max_size_gb is None:
            raise UsageError("cache prune: give --max-age-days N and/or --max-size-gb G")
        removed = cache.prune(max_age_s=None if args.max_age_days is None else args.max_age_days * 86400,
                              max_bytes=None if args.max_size_gb is None else int(args.max_size_gb * 1e9))
        print(f"removed {len(removed)} entr{'y' if len(removed) == 1 else 'ies'} from {cache.root}")
    entries = cache.entries()
    total = sum(e[2] for e in entries)
    oldest = f"; least recently used {(time.time() - entries[0][1]) / 86400:.1f} days ago" if entries else ""
    print(f"{cache.root}: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}, {size(total)}{oldest}")
    return 0
