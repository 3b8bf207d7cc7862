"""Release builds: a matrix of models x precisions x targets, built in worker processes, cached by content.

* `config`: the strict ``release.toml`` reader;
* `cache`: the content-addressed build cache in a folder (keys, locks, verified entries, per-host staging);
  `url_cache`: the same behind an fsspec URL (put-if-absent commits); `inputs`: input files as archives;
* `worker`: one cell's build, run as ``python -m compiler.release.worker`` so a crash stays in its cell;
* `executor`: where cache misses are built (`LocalExecutor`: worker processes here; `dask_executor`: a
  Dask cluster), one interface;
* `driver`: plans the matrix, looks the cache up, hands misses to the executor, fills ``dist/``, profiles,
  writes ``index.json``.
"""
