"""The `moelab` command: trace | figures | bench | train (a thin front end over library and tool functions).

    $ moelab trace --corpus heldout --out runs/heldout              # embedded model, every domain
    $ moelab trace --model /models/Mixtral-8x7B --dtype float16 --device cuda --corpus heldout --out runs/mx
    $ torchrun --nproc_per_node 2 -m moelab.cli trace --corpus heldout --out runs/dp   # one shard per process
    $ moelab figures                                                # run every notebook, refresh figures/
    $ moelab bench moe-vs-dense --help                              # moelab.bench.cli
    $ moelab bench tracer --out bench/results/tracer_cpu.json       # moelab.bench.tracer_overhead
    $ moelab train --out /tmp/retrained                             # moelab.tools.train

`trace` cuts each document into windows of `--seq-len` tokens (BOS opens each document),
batches them, and streams the routing to `--out` (a folder of Parquet parts;
`moelab.load_trace(out)` returns the union); it runs the decoder stack alone (no LM
head: `moelab.corpus.trace_corpus`) and prints the dtype it chose and why.
`--resume` continues a killed run from its finished parts, refusing a folder
written with other settings. Each window is one sequence of the
trace, tagged with its `domain`, `document` (global index) and `offset` (token
offset of the window in its document). Under torchrun / accelerate launch
every process takes every n-th batch and writes its own shard `rank-<r>/`.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _collect_texts(args) -> list[tuple[str, int, str]]:
    from .data import load_documents

    texts = []
    if args.text:
        texts += [("text", i, t) for i, t in enumerate(args.text)]
    if args.text_file:
        for f in args.text_file:
            texts.append((Path(f).stem, len(texts), Path(f).read_text(encoding="utf-8")))
    if args.corpus:
        docs = load_documents(args.corpus, args.domains)
        for d, ds in docs.items():
            for doc in ds[: args.max_docs]:
                texts.append((d, len(texts), doc))
    if not texts:
        raise SystemExit("moelab trace: nothing to trace; pass --text, --text-file or --corpus {train,heldout}")
    return texts


SETTINGS = ("model", "dtype", "source", "seq_len", "batch_size", "logits", "scores", "domains", "max_docs", "world_size")


def cmd_trace(args) -> None:
    import torch
    from accelerate import PartialState

    from .corpus import batches_of, trace_corpus, traced_windows, windows
    from .device import resolve_device_dtype
    from .models import load_model

    state = PartialState(cpu=args.device == "cpu")
    device, dtype = resolve_device_dtype(args.device, args.dtype, verbose=state.is_local_main_process)
    if device == "cuda" and state.num_processes > 1:
        device = f"cuda:{state.local_process_index}"
    if device == "cpu" and state.num_processes == 1 and args.threads:
        torch.set_num_threads(args.threads)
    model, tok = load_model(args.model, dtype=dtype, device_map=args.device_map)
    if args.device_map is None:
        model.to(device)
    batches = batches_of(windows(_collect_texts(args), tok, args.seq_len), args.batch_size)
    mine = batches[state.process_index:: state.num_processes]
    out = Path(args.out) / (f"rank-{state.process_index}" if state.num_processes > 1 else "")
    settings = {"model": str(args.model or "embedded"), "dtype": str(dtype).replace("torch.", ""),
                "source": args.corpus or "text", "seq_len": args.seq_len, "batch_size": args.batch_size,
                "logits": bool(args.logits), "scores": bool(args.scores), "domains": args.domains, "max_docs": args.max_docs,
                "world_size": state.num_processes}
    todo = mine
    if args.resume and out.is_dir() and any(out.rglob("*.parquet")):
        _check_resume(out, settings)
        done = traced_windows(out)
        todo = [b for b in mine if (b[0].document, b[0].offset) not in done]
        print(f"[rank {state.process_index}] resuming {out}: {len(mine) - len(todo)} of {len(mine)} batches "
              "already traced")
    meta = {"shard": state.process_index, "tokenizer": getattr(tok, "name_or_path", type(tok).__name__),
            "trace_settings": settings}
    trace_corpus(model, tok, [], seq_len=args.seq_len, batch_size=args.batch_size, logits=args.logits,
                 scores=args.scores, path=out, meta=meta, batches=todo, progress=state.is_local_main_process,
                      desc=f"trace[{state.process_index}]", append=args.resume, retain=False,
                 flush_tokens=args.flush_tokens)
    state.wait_for_everyone()
    n_tokens = sum(len(w.ids) for b in todo for w in b)
    print(f"[rank {state.process_index}/{state.num_processes}] traced {n_tokens} tokens in {len(todo)} "
          f"batches -> {out}")


def _check_resume(out: Path, settings: dict) -> None:
    """A resumed run must continue a run of the same settings; otherwise say which differ, and where."""
    import json

    import pyarrow.parquet as pq

    for f in sorted(out.rglob("*.parquet")):
        raw = (pq.read_schema(f).metadata or {}).get(b"moelab")
        old = (json.loads(raw).get("meta", {}) if raw else {}).get("trace_settings")
        old = None if old is None else {"scores": False, **old}  # runs from before --scores recorded none
        diff = {k: (old.get(k), settings.get(k)) for k in SETTINGS if old is not None and old.get(k) != settings.get(k)}
        if old is None or diff:
            what = "has no moelab trace settings" if old is None else \
                "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
            raise SystemExit(f"moelab trace --resume: {f} was written by different settings ({what}). "
                             "Resume with the original arguments, or trace into a new --out folder.")


def cmd_figures(args) -> None:
    from .tools.notebooks import run_all

    run_all(out=args.out, only=args.only, timeout=args.timeout)


def cmd_bench(args, rest) -> None:
    if args.which == "moe-vs-dense":
        from .bench.cli import main

        main(rest)
    elif args.which == "tracer":
        from .bench.tracer_overhead import main

        main(rest)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="moelab", description="Trace and analyse Mixture-of-Experts routing.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("trace", help="trace a model's routing over text or the corpus into Parquet")
    t.add_argument("--model", default=None, help="local folder or hub id (default: the embedded model)")
    t.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: float16 on CUDA; on CPU bfloat16 where native, else float32 (printed)")
    t.add_argument("--device", default="auto", help="cpu | cuda | auto")
    t.add_argument("--device-map", default=None, help='passed to from_pretrained, e.g. "auto" for multi-GPU/offload')
    t.add_argument("--text", action="append", help="a text to trace (repeatable)")
    t.add_argument("--text-file", action="append", help="a UTF-8 file to trace (repeatable)")
    t.add_argument("--corpus", choices=["train", "heldout"], help="trace moelab's corpus split")
    t.add_argument("--domains", nargs="*", default=None, help="corpus domains (default: all)")
    t.add_argument("--max-docs", type=int, default=None, help="at most this many documents per domain")
    t.add_argument("--seq-len", type=int, default=256, help="tokens per window")
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--logits", action="store_true", help="also record full router logits (fp32)")
    t.add_argument("--scores", action="store_true",
                   help="also record the selection scores (fp32; what each router's top-k runs on, bias included)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--resume", action="store_true",
                   help="continue a killed run in --out: skip the windows its finished parts hold")
    t.add_argument("--flush-tokens", type=int, default=65536, help="tokens per Parquet part")
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")

    f = sub.add_parser("figures", help="execute every notebook on the embedded model and refresh figures/")
    f.add_argument("--out", default=None, help="figures folder (default: figures/)")
    f.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 03")
    f.add_argument("--timeout", type=int, default=1200, help="seconds per cell")

    b = sub.add_parser("bench", add_help=False,   # NAME --help goes to the benchmark's own parser
                       help="benchmarks: moe-vs-dense | tracer (pass --help after the name)")
    b.add_argument("which", choices=["moe-vs-dense", "tracer"])

    tr = sub.add_parser("train", add_help=False,   # --help goes to moelab.tools.train's own parser
                        help="train the embedded model (moelab.tools.train; moelab train --help)")
    tr.add_argument("rest", nargs=argparse.REMAINDER)

    args, rest = p.parse_known_args(argv)
    if args.cmd == "trace":
        if rest:
            p.error(f"unrecognised arguments: {' '.join(rest)}")
        cmd_trace(args)
    elif args.cmd == "figures":
        cmd_figures(args)
    elif args.cmd == "bench":
        cmd_bench(args, rest)
    elif args.cmd == "train":
        from .tools.train import main as train_main

        train_main(args.rest + rest)


if __name__ == "__main__":
    main()
