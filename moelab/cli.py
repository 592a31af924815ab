"""The `moelab` command: trace | figures | bench | train.

    $ moelab trace --corpus heldout --out runs/heldout              # embedded model, every domain
    $ moelab trace --model /models/Mixtral-8x7B --dtype float16 --device cuda --corpus heldout --out runs/mx
    $ torchrun --nproc_per_node 2 -m moelab.cli trace --corpus heldout --out runs/dp   # one shard per process
    $ moelab figures                                                # run every notebook, refresh figures/
    $ moelab bench moe-vs-dense --help

`trace` cuts each document into windows of `--seq-len` tokens (BOS opens each document),
batches them, and streams the routing to `--out` (a folder of Parquet parts;
`moelab.load_trace(out)` returns the union). Each window is one sequence of the
trace, tagged with its `domain`, `document` (global index) and `offset` (token
offset of the window in its document). Under torchrun / accelerate launch
every process takes every n-th batch and writes its own shard `rank-<r>/`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _windows(texts: list[tuple[str, int, str]], tok, seq_len: int):
    """(domain, document, offset, ids) for every window of every document."""
    for domain, doc_id, text in texts:
        ids = tok.encode(text)  # BOS + pieces
        for off in range(0, len(ids), seq_len):
            chunk = ids[off: off + seq_len]
            if len(chunk) >= 2:
                yield domain, doc_id, off, chunk


def _pad_right(batch, pad: int):
    """A batch of windows -> right-padded (ids, attention_mask) and the per-row tags."""
    import torch

    width = max(len(w[3]) for w in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, w in enumerate(batch):  # right padding: positions start at 0 for every window
        ids[i, : len(w[3])] = torch.tensor(w[3])
        mask[i, : len(w[3])] = 1
    tags = dict(domain=[w[0] for w in batch], document=[w[1] for w in batch], offset=[w[2] for w in batch])
    return ids, mask, tags


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


def cmd_trace(args) -> None:
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from . import trace
    from .models import load_model

    state = PartialState(cpu=args.device == "cpu")
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and state.num_processes > 1:
        device = f"cuda:{state.local_process_index}"
    dtype = getattr(torch, args.dtype) if args.dtype else (torch.bfloat16 if device == "cpu" else torch.float16)
    model, tok = load_model(args.model, dtype=dtype, device_map=args.device_map)
    if args.device_map is None:
        model.to(device)
    windows = sorted(_windows(_collect_texts(args), tok, args.seq_len), key=lambda w: -len(w[3]))
    batches = [windows[i: i + args.batch_size] for i in range(0, len(windows), args.batch_size)]
    mine = batches[state.process_index:: state.num_processes]
    out = Path(args.out) / (f"rank-{state.process_index}" if state.num_processes > 1 else "")
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    tracer = trace(model, path=out, logits=args.logits, retain=False,
                   meta={"shard": state.process_index, "source": args.corpus or "text", "seq_len": args.seq_len,
                         "tokenizer": getattr(tok, "name_or_path", type(tok).__name__)})
    n_tokens = 0
    with tracer, torch.no_grad():
        for batch in tqdm(mine, desc=f"trace[{state.process_index}]", disable=not state.is_local_main_process):
            ids, mask, tags = _pad_right(batch, pad)
            tracer.tag(**tags)
            model(input_ids=ids.to(model.device), attention_mask=mask.to(model.device), use_cache=False)
            n_tokens += int(mask.sum())
    state.wait_for_everyone()
    print(f"[rank {state.process_index}/{state.num_processes}] traced {n_tokens} tokens in {len(mine)} batches "
          f"-> {out}")


def cmd_figures(args) -> None:
    from .notebooks import run_all

    run_all(out=args.out, only=args.only, timeout=args.timeout)


def cmd_bench(args, rest) -> None:
    if args.which == "moe-vs-dense":
        from .bench import main

        main(rest)
    elif args.which == "tracer":
        import runpy

        sys.argv = ["bench_tracer.py", *rest]
        runpy.run_path(str(Path(__file__).resolve().parents[1] / "bench" / "bench_tracer.py"), run_name="__main__")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="moelab", description="Trace and analyse Mixture-of-Experts routing.")
    sub = p.add_subparsers(dest="cmd", required=True)

    t = sub.add_parser("trace", help="trace a model's routing over text or the corpus into Parquet")
    t.add_argument("--model", default=None, help="local folder or hub id (default: the embedded model)")
    t.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default: bfloat16 on CPU, float16 on CUDA")
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
    t.add_argument("--out", required=True, help="output folder")

    f = sub.add_parser("figures", help="execute every notebook on the embedded model and refresh figures/")
    f.add_argument("--out", default=None, help="figures folder (default: figures/)")
    f.add_argument("--only", nargs="*", default=None, help="notebook name prefixes, e.g. 01 03")
    f.add_argument("--timeout", type=int, default=1200, help="seconds per cell")

    b = sub.add_parser("bench", help="benchmarks: moe-vs-dense | tracer (pass --help after the name)")
    b.add_argument("which", choices=["moe-vs-dense", "tracer"])

    tr = sub.add_parser("train", help="train the embedded model (see python -m moelab.train --help)")
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
        from .train import main as train_main

        train_main(args.rest + rest)


if __name__ == "__main__":
    main()
