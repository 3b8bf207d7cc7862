"""``chipfit generate``: a decoder LM artifact generates text, streamed, with its rates."""

from __future__ import annotations

import argparse
import sys

from compiler.errors import UsageError



def host_arch() -> str:
    from targets.host import detect_host

    return detect_host().arch



def cmd_generate(args: argparse.Namespace) -> int:
    from targets.host import detect_host
    from targets.manifest import read_artifact
    from targets.registry import backend_registry, target_registry

    if args.max_new_tokens < 1:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: must be at least 1")
    artifact = read_artifact(args.path)
    m = artifact.manifest
    if m.llm is None:
        raise UsageError(f"{args.path}: not a language model artifact (built from {m.model.source_kind} "
                         f"{m.model.source}); `chipfit generate` takes a decoder LM built from a model folder")
    problems = artifact.file_problems()
    if problems:
        raise UsageError(f"{args.path}: refusing to run a modified artifact: {'; '.join(problems)}")
    from tokenizers import Tokenizer

    tokenizer_file = next((artifact.path / f for f in m.llm.tokenizer_files if f.endswith("tokenizer.json")), None)
    if tokenizer_file is None:
        raise UsageError(f"{args.path}: the artifact holds no tokenizer.json")
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    ids = tokenizer.encode(args.prompt).ids
    if not ids:
        raise UsageError("--prompt: it encodes to no tokens")
    if len(ids) + args.max_new_tokens > m.llm.context:
        raise UsageError(f"--max-new-tokens {args.max_new_tokens}: the prompt ({len(ids)} tokens) and the new tokens "
                         f"exceed the artifact's context of {m.llm.context}")
    target = target_registry().get(m.target.id)
    plan = backend_registry().get(m.backend.name).plan_generate(artifact.path, m.backend.options, target, detect_host())
    if plan.note:
        print(f"note: {plan.note}", file=sys.stderr)
    eos = m.llm.generation.get("eos_token_id")
    stop = tuple(eos) if isinstance(eos, list) else ((eos,) if isinstance(eos, int) else ())
    made: list[int] = []
    shown = ""
    sys.stdout.write(args.prompt)

    def stream(token: int) -> None:
        nonlocal shown
        made.append(token)
        text = tokenizer.decode(made)
        if not text.endswith("\ufffd"):  # a character split across tokens waits for its last byte
            sys.stdout.write(text[len(shown):])
            sys.stdout.flush()
            shown = text

    result = plan.runner.generate(ids, args.max_new_tokens, stop=() if args.ignore_eos else stop, on_token=stream)
    sys.stdout.write("\n")
    sys.stdout.flush()
    decode_s = sum(result.token_s)
    rate = f"{len(result.token_s) / decode_s:.1f} tok/s" if decode_s > 0 else "-"
    print(f"{len(result.tokens)} tokens; prompt {len(ids)} tokens, time to first token {result.prefill_s * 1e3:.1f} ms, "
          f"decode {rate} ({plan.runner.description})", file=sys.stderr)
    return 0
