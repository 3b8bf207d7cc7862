"""llama.cpp driven across a process boundary: run by the llamacpp environment's Python, never imported by chipfit.

    python runtime.py quantize SRC.gguf DST.gguf TYPE THREADS
    python runtime.py serve MODEL.gguf N_CTX THREADS CACHE [MMPROJ.gguf MIN_TOKENS MAX_TOKENS]
                                                            (one JSON request per line on stdin, one reply per line)

It imports only the standard library, numpy and ``llama_cpp`` (llama-cpp-python, compiled on this machine by
``chipfit toolchain install llamacpp``): a crash inside llama.cpp ends this process, not the build. Quantizing
calls ``llama_model_quantize``, the function llama.cpp's own ``llama-quantize`` tool calls. Serving loads the file
as an application does (``llama_cpp.Llama``: mmap, the CPU backend with its runtime repacking of Q4_0) and times
each step here, so the figures hold no pipe or JSON cost. With an ``mmproj`` file (a vision-language model's
vision encoder and projector) it also serves prompts with images through llama.cpp's ``mtmd`` library, as
llama.cpp's own multimodal tools do: ``mtmd_tokenize`` splits the prompt at each media marker and sizes each image
within the token bounds given (the model's processor's), the image chunks are encoded by the vision encoder and
decoded into the context with the positions the family needs (M-RoPE for Qwen-VL).
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
    def __init__(self, path: str, n_ctx: int, threads: int, cache_type: str = "F16", mmproj: str = "",
                 min_tokens: int = 0, max_tokens: int = 0) -> None:
        kind = CACHE_TYPES[cache_type]
        # a quantized V cache needs flash attention in llama.cpp; the float caches keep its default path
        self.llm = llama_cpp.Llama(model_path=path, n_ctx=n_ctx, n_batch=512, n_ubatch=512, n_threads=threads,
                                   n_threads_batch=threads, logits_all=False, verbose=False, type_k=kind, type_v=kind,
                                   **({"flash_attn": True} if cache_type == "Q8_0" else {}))
        self.vocab = self.llm.n_vocab()
        self.vision = Vision(self.llm, mmproj, threads, min_tokens, max_tokens) if mmproj else None

    def _last_logits(self) -> np.ndarray:
        pointer = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(pointer, shape=(self.vocab,))

    def _greedy(self, start: float, n: int, stop: list[int], step) -> dict:
        """Greedy tokens from the context as it stands (the prompt evaluated since ``start``), each fed by ``step``."""
        tokens: list[int] = []
        times: list[float] = []
        while len(tokens) < n:
            token = int(np.argmax(self._last_logits()))
            now = time.perf_counter()
            times.append(now - start)
            tokens.append(token)
            if token in stop or len(tokens) == n:
                break
            start = time.perf_counter()
            step(token)
        return {"tokens": tokens, "prefill_s": times[0] if times else 0.0, "token_s": times[1:]}

    def generate(self, ids: list[int], n: int, stop: list[int]) -> dict:
        self.llm.reset()
        start = time.perf_counter()
        self.llm.eval(ids)
        return self._greedy(start, n, stop, lambda token: self.llm.eval([token]))

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

    def detokenize(self, ids: list[int]) -> dict:
        return {"text": self.llm.detokenize(ids).decode("utf-8", errors="replace")}

    # -- prompts with images (a vision-language model's mmproj) ------------------------------------------------
    def _step(self, token: int) -> None:
        batch = llama_cpp.llama_batch_get_one((llama_cpp.llama_token * 1)(token), 1)
        if llama_cpp.llama_decode(self.llm.ctx, batch) != 0:  # positions follow the cache's last (M-RoPE too)
            raise RuntimeError("llama_decode failed")

    def prompt_ids(self, prompt: str, images: list[str], image_token: int, add_special: bool = False) -> dict:
        with self.vision.chunks(prompt, images, add_special) as chunks:
            return {"ids": self.vision.ids(chunks, image_token)}

    def generate_images(self, prompt: str, images: list[str], n: int, stop: list[int], add_special: bool = False
                        ) -> dict:
        start = time.perf_counter()
        encode_s = self.vision.eval_prompt(prompt, images, add_special)
        return {**self._greedy(start, n, stop, self._step), "encode_s": encode_s}

    def image_logits(self, prompt: str, images: list[str], forced: list[int], out: str, add_special: bool = False
                     ) -> dict:
        self.vision.eval_prompt(prompt, images, add_special)
        rows = np.empty((len(forced) + 1, self.vocab), np.float32)
        rows[0] = self._last_logits()
        for i, token in enumerate(forced):
            self._step(token)
            rows[i + 1] = self._last_logits()
        np.save(out, rows)
        return {"rows": len(rows)}

    def image_features(self, image: str, out: str) -> dict:
        np.save(out, self.vision.features(image))
        return {}


class Vision:
    """llama.cpp's mtmd context on the text model: images in, the model's context filled."""

    def __init__(self, llm, mmproj: str, threads: int, min_tokens: int, max_tokens: int) -> None:
        import llama_cpp.mtmd_cpp as mtmd

        self.mtmd, self.llm = mtmd, llm
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = threads
        params.warmup = False
        if min_tokens > 0:  # the model's processor's bounds, so images are sized as transformers sizes them
            params.image_min_tokens = min_tokens
        if max_tokens > 0:
            params.image_max_tokens = max_tokens
        self.ctx = mtmd.mtmd_init_from_file(mmproj.encode(), llm.model, params)
        if not self.ctx:
            raise RuntimeError(f"llama.cpp's mtmd could not load {mmproj}")
        self.marker = mtmd.mtmd_default_marker().decode()

    def chunks(self, prompt: str, images: list[str], add_special: bool = False) -> "Chunks":
        return Chunks(self, prompt, images, add_special)

    def ids(self, chunks, image_token: int) -> list[int]:
        mtmd = self.mtmd
        ids: list[int] = []
        for i in range(mtmd.mtmd_input_chunks_size(chunks)):
            chunk = mtmd.mtmd_input_chunks_get(chunks, i)
            if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                count = ctypes.c_size_t()
                pointer = mtmd.mtmd_input_chunk_get_tokens_text(chunk, ctypes.byref(count))
                ids += [int(pointer[j]) for j in range(count.value)]
            else:
                ids += [image_token] * int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
        return ids

    def eval_prompt(self, prompt: str, images: list[str], add_special: bool = False) -> float:
        """The prompt and its images into a cleared context; the seconds spent encoding images."""
        mtmd = self.mtmd
        self.llm.reset()
        self.llm._ctx.kv_cache_clear()
        encode_s = 0.0
        with self.chunks(prompt, images, add_special) as chunks:
            count = mtmd.mtmd_input_chunks_size(chunks)
            n_past = 0
            for i in range(count):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                # the helper adds a text chunk's tokens to *new_n_past (it sets an image chunk's): start it at n_past
                new_past = llama_cpp.llama_pos(n_past)
                if mtmd.mtmd_input_chunk_get_type(chunk) == mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    done = mtmd.mtmd_helper_eval_chunk_single(self.ctx, self.llm.ctx, chunk, n_past, 0,
                                                              self.llm.n_batch, i == count - 1,
                                                              ctypes.byref(new_past))
                else:
                    if i == count - 1:
                        raise ValueError("the prompt ends with an image: put text after it")
                    start = time.perf_counter()
                    if mtmd.mtmd_encode_chunk(self.ctx, chunk) != 0:
                        raise RuntimeError("mtmd_encode_chunk failed")
                    encode_s += time.perf_counter() - start
                    done = mtmd.mtmd_helper_decode_image_chunk(self.ctx, self.llm.ctx, chunk,
                                                               mtmd.mtmd_get_output_embd(self.ctx), n_past, 0,
                                                               self.llm.n_batch, ctypes.byref(new_past),
                                                               mtmd.mtmd_helper_post_decode_callback(), None)
                if done != 0:
                    raise RuntimeError(f"mtmd could not evaluate prompt part {i} (error {done})")
                n_past = new_past.value
        return encode_s

    def features(self, image: str) -> np.ndarray:
        mtmd = self.mtmd
        with self.chunks(self.marker, [image]) as chunks:
            for i in range(mtmd.mtmd_input_chunks_size(chunks)):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) != mtmd.MTMD_INPUT_CHUNK_TYPE_TEXT:
                    if mtmd.mtmd_encode_chunk(self.ctx, chunk) != 0:
                        raise RuntimeError("mtmd_encode_chunk failed")
                    rows = int(mtmd.mtmd_input_chunk_get_n_tokens(chunk))
                    width = llama_cpp.llama_model_n_embd(self.llm.model)
                    return np.ctypeslib.as_array(mtmd.mtmd_get_output_embd(self.ctx), shape=(rows, width)).copy()
        raise ValueError("mtmd made no image chunk")


class Chunks:
    """A prompt tokenized by mtmd with its images (HxWx3 uint8 .npy files), freed on exit."""

    def __init__(self, vision: Vision, prompt: str, images: list[str], add_special: bool = False) -> None:
        self.vision, self.prompt, self.images, self.add_special = vision, prompt, images, add_special

    def __enter__(self):
        mtmd = self.vision.mtmd
        self.bitmaps = []
        for path in self.images:
            pixels = np.ascontiguousarray(np.load(path, allow_pickle=False), dtype=np.uint8)
            height, width, _ = pixels.shape
            data = (ctypes.c_ubyte * pixels.size).from_buffer_copy(pixels.tobytes())
            self.bitmaps.append(mtmd.mtmd_bitmap_init(width, height, data))
        text = mtmd.mtmd_input_text()
        raw = self.prompt.encode()
        text.text, text.text_len, text.add_special, text.parse_special = raw, len(raw), self.add_special, True
        self.chunks = mtmd.mtmd_input_chunks_init()
        array = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(self.bitmaps)))(*self.bitmaps)
        done = mtmd.mtmd_tokenize(self.vision.ctx, self.chunks, ctypes.byref(text), array, len(self.bitmaps))
        if done != 0:
            self.__exit__()
            raise ValueError(f"mtmd could not tokenize the prompt with {len(self.images)} image(s) (error {done}: "
                             "1 = the markers and images differ in number, 2 = an image failed to preprocess)")
        return self.chunks

    def __exit__(self, *exc) -> None:
        mtmd = self.vision.mtmd
        mtmd.mtmd_input_chunks_free(self.chunks)
        for bitmap in self.bitmaps:
            mtmd.mtmd_bitmap_free(bitmap)


def serve(path: str, n_ctx: int, threads: int, cache_type: str = "F16", mmproj: str = "", min_tokens: str = "0",
          max_tokens: str = "0") -> int:
    session = Session(path, n_ctx, threads, cache_type, mmproj, int(min_tokens), int(max_tokens))
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
        return serve(argv[1], int(argv[2]), int(argv[3]), *argv[4:8])
    print(f"unknown command {argv[0]!r}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
