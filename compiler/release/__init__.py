"""Release builds: a matrix of models x precisions x targets, built in worker processes, cached by content.

* `config`: the strict ``release.toml`` reader;
* `cache`: the content-addressed build cache (keys, locks, verified entries);
* `worker`: one cell's build, run as ``python -m compiler.release.worker`` so a crash stays in its cell;
* `driver`: plans the matrix, schedules cells, fills ``dist/``, profiles, writes ``index.json``.
"""
