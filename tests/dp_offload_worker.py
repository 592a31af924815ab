"""Worker for tests/test_multinode.py: trace a device_map-sharded model, this process's share of batches.

    python tests/dp_offload_worker.py MODEL_DIR OUT OFFLOAD_DIR [--split]

Loads MODEL_DIR with an accelerate device_map that offloads the middle decoder
layer to disk (`--split`), or whole on the CPU, and traces every world_size-th
batch of a fixed set of random token batches into `moelab.shards.shard_path(OUT)`.
Run under torchrun for data-parallel ranks, or alone for the reference.
"""

import sys

import torch
from transformers import AutoModelForCausalLM

import moelab
from moelab.shards import global_rank, shard_path


def device_map(num_layers: int) -> dict:
    """Layer 1 on disk (accelerate offload hooks load it per forward), everything else on the CPU."""
    m = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
    m.update({f"model.layers.{i}": "disk" if i == 1 else "cpu" for i in range(num_layers)})
    return m


def batches(vocab: int, n: int = 6, B: int = 2, S: int = 16):
    g = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (B, S), generator=g) for _ in range(n)]


def main(model_dir, out, offload, split):
    rank, world = global_rank()
    kw = dict(device_map=device_map(3), offload_folder=f"{offload}-{rank}") if split else {}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kw).eval()
    mine = batches(model.config.vocab_size)[rank::world]
    with moelab.trace(model, path=shard_path(out), retain=False), torch.no_grad():
        for ids in mine:
            model.model(input_ids=ids, use_cache=False)
    print(f"rank {rank}/{world}: traced {len(mine)} batches -> {shard_path(out)}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], "--split" in sys.argv[4:])
