"""llama.cpp driven across a process boundary: run by the llamacpp environment's Python, never imported by chipfit.

    python runtime.py quantize SRC.gguf DST.gguf TYPE THREADS
    python runtime.py serve MODEL.gguf N_CTX THREADS        (one JSON request per line on stdin, one reply per line)

It imports only the standard library, numpy and ``llama_cpp`` (llama-cpp-python, compiled on this machine by
``chipfit toolchain install llamacpp``): a crash inside llama.cpp ends this process, not the build. Quantizing
calls ``llama_model_quantize``, the function llama.cpp's own ``llama-quantize`` tool calls. Serving loads the file
as an application does (``llama_cpp.Llama``: mmap, the CPU backend with its runtime repacking of Q4_0) and times
each step here, so the figures hold no pipe or JSON cost.
"""

from __future__ import annotations

import ctypes
import json
import sys
import time

import numpy as np

import llama_cpp

#: GGUF file types by llama.cpp's names (the ``llama_ftype`` enum; llama-quantize's type names)
FTYPES = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_M": 17, "Q6_K": 18,
          "IQ4_NL": 25, "BF16": 32}


def quantize(src: str, dst: str, kind: str, threads: int) -> int:
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = FTYPES[kind]
    params.nthread = threads
    return int(llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)))


#: KV cache types by llama.cpp's names (``ggml_type``; llama-cli's --cache-type-k / -v)
CACHE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 8}


class Session:
    def __init__(self, path: str, n_ctx: int, threads: int, cache_type: str = "F16") -> None:
        kind = CACHE_TYPES[cache_type]
        # a quantized V cache needs flash attention in llama.cpp; the float caches keep its default path
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False, type_k=kind, type_v=kind,
                                   **({"flash_attn": True} if cache_type == "Q8_0" else {}))
        self.vocab = self.llm.n_vocab()

    def _last_logits(self) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,))

    def generate(self, ids: list[int], n: int, stop: list[int]) -> dict:
        self.llm.reset()
        tokens: list[int] = []
        times: list[float] = []
        start = time.perf_counter()
        self.llm.eval(ids)
        while len(tokens) < n:
            token = int(np.argmax(self._last_logits()))
            now = time.perf_counter()
            times.append(now - start)
            tokens.append(token)
            if token in stop or len(tokens) == n:
                break
            start = time.perf_counter()
            self.llm.eval([token])
        return {"tokens": tokens, "prefill_s": times[0] if times else 0.0, "token_s": times[1:]}

    def logits(self, ids: list[int], out: str) -> dict:
        """Teacher-forced logits at every position, one token a step (the decode path an app runs)."""
        self.llm.reset()
        rows = np.empty((len(ids), self.vocab), np.float32)
        for i, token in enumerate(ids):
            self.llm.eval([token])
            rows[i] = self._last_logits()
        np.save(out, rows)
        return {"rows": len(ids)}

    def tokenize(self, text: str) -> dict:
        return {"ids": self.llm.tokenize(text.encode(), add_bos=False, special=False)}


def serve(path: str, n_ctx: int, threads: int, cache_type: str = "F16") -> int:
    session = Session(path, n_ctx, threads, cache_type)
    info = {"ready": True, "vocab": session.vocab, "version": llama_cpp.__version__,
            "system": llama_cpp.llama_print_system_info().decode(errors="replace").strip()}
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            break
        try:
            reply = getattr(session, op)(**request)
        except Exception as exc:  # reported to chipfit, which raises it as the cell's error
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[0] == "quantize":
        return quantize(argv[1], argv[2], argv[3], int(argv[4]))
    if argv[0] == "serve":
        return serve(argv[1], int(argv[2]), int(argv[3]), *argv[4:5])
    print(f"unknown command {argv[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
