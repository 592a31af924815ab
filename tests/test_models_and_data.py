"""The embedded model, its checkpoints, Mixtral's tokenizer and the corpus API."""

import json

import numpy as np
import pytest
import sentencepiece as spm
import torch

import moelab
from moelab.data import DOC_SEP, load_documents, mixtral_tokenizer_path
from moelab.models import checkpoints, default_model_dir

SAMPLES = ["Hello world, déjà vu", "  def f(x):\n\treturn x**2\n", "Über die Straße 12345 ∑ 你好", " leading"]


# ------------------------------------------------------------------ tokenizer
def test_tokenizer_is_mixtrals_sentencepiece_with_bos():
    tok = moelab.load_tokenizer()
    sp = spm.SentencePieceProcessor(model_file=str(mixtral_tokenizer_path()))
    assert len(tok) == 32000 and (tok.bos_token_id, tok.eos_token_id) == (1, 2)
    for s in SAMPLES:
        assert tok(s)["input_ids"] == [1] + sp.encode(s)
        assert tok.decode(tok(s)["input_ids"], skip_special_tokens=True) == sp.decode(sp.encode(s))


def test_tokenizer_batches_with_left_or_right_padding():
    tok = moelab.load_tokenizer()
    left = tok(["a", "b c d"], return_tensors="pt", padding=True)
    right = tok(["a", "b c d"], return_tensors="pt", padding=True, padding_side="right")
    n = len(tok("b c d")["input_ids"])
    assert left["input_ids"].shape == (2, n)
    assert left["attention_mask"][0].tolist() == [0] * (n - 2) + [1, 1]
    assert right["attention_mask"][0].tolist() == [1, 1] + [0] * (n - 2)
    assert left["input_ids"][0, -2:].tolist() == tok("a")["input_ids"]


def test_tokenizer_rejects_ragged_batch_without_padding_and_empty_input():
    tok = moelab.load_tokenizer()
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "b c d"], return_tensors="pt")
    with pytest.raises(ValueError, match="empty"):
        tok([])


# ------------------------------------------------------------------ corpus
def test_corpus_has_every_domain_in_both_splits():
    train, held = moelab.load_corpus("train"), moelab.load_corpus("heldout")
    expected = {"code", "math", "fiction", "biomedical", "encyclopedic", "legal", "tex",
                "docs_en", "docs_fr", "docs_de", "docs_es", "docs_it"}
    assert set(train) == set(held) == expected
    for d in expected:
        assert len(held[d]) > 0.04 * len(train[d]) and DOC_SEP not in train[d]


def test_unknown_domain_and_split_are_clear_errors():
    with pytest.raises(ValueError, match="unknown domains.*klingon"):
        load_documents("train", ["klingon"])
    with pytest.raises(ValueError, match="split"):
        load_documents("validation")


# ------------------------------------------------------------------ embedded model
needs_model = pytest.mark.skipif(not (default_model_dir() / "config.json").exists(),
                                 reason="embedded model not built")


@needs_model
def test_embedded_model_loads_offline_and_reads_every_domain(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model, tok = moelab.load_model()
    assert type(model).__name__ == "MixtralForCausalLM" and model.dtype == torch.bfloat16
    assert (model.config.num_local_experts, model.config.num_experts_per_tok, model.config.vocab_size) == (8, 2, 32000)
    docs = load_documents("heldout")
    texts = [docs[d][0][:400] for d in sorted(docs)]
    batch = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad(), moelab.trace(model) as tr:
        out = model(**batch)
    assert torch.isfinite(out.logits.float()).all()
    assert tr.num_tokens == int(batch["attention_mask"].sum())


@needs_model
def test_embedded_model_beats_the_unigram_baseline_by_3x():
    from moelab.train import heldout_perplexity, mixed, tokenize_split, unigram_perplexity

    ev = json.loads((default_model_dir() / "eval.json").read_text())
    assert ev["mixed_unigram_perplexity"] / ev["mixed_heldout_perplexity"] >= 3.0
    assert set(ev["heldout_perplexity"]) == set(moelab.load_corpus("heldout"))
    # and the shipped weights, not only the recorded file: recompute on a held-out slice (513 tokens a domain)
    model, _ = moelab.load_model(dtype=torch.float32)
    held = tokenize_split("heldout", max_tokens=513)
    ppl = heldout_perplexity(model, held, seq_len=256)
    uni = unigram_perplexity(held, held, model.config.vocab_size)  # fitted on the test tokens: a stricter bar
    assert mixed(uni, held) / mixed(ppl, held) >= 3.0


@needs_model
def test_checkpoints_record_step_tokens_and_config():
    ck = checkpoints()
    assert len(ck) >= 5 and ck == sorted(ck, key=lambda c: c["step"])
    tokens = [c["tokens_seen"] for c in ck]
    assert all(b > a for a, b in zip(tokens, tokens[1:]))
    final_cfg = json.loads((default_model_dir() / "config.json").read_text())
    for c in ck[:-1]:
        cfg = json.loads((default_model_dir() / c["path"] / "config.json").read_text())
        assert {k: cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_local_experts")} == \
               {k: final_cfg[k] for k in ("hidden_size", "num_hidden_layers", "num_local_experts")}
    assert ck[-1]["tokens_seen"] == json.loads((default_model_dir() / "eval.json").read_text())["tokens_seen"]


@needs_model
def test_embedded_weights_stay_under_100_mb():
    size = sum(p.stat().st_size for p in default_model_dir().rglob("*.safetensors"))
    assert size < 100e6, size


def test_missing_hub_model_without_download_permission_says_how_to_point_at_local_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(OSError, match="local folder"):
        moelab.load_model("mistralai/Mixtral-8x7B-v0.1")


# ------------------------------------------------------------------ training code cannot rot
def test_training_script_runs_a_tiny_model_for_a_few_steps(tmp_path):
    from moelab.train import PRESETS, TrainConfig, train

    cfg = TrainConfig(**PRESETS["smoke"])
    res = train(cfg, tmp_path / "m", progress=False)
    log = (tmp_path / "m" / "training_log.csv").read_text().splitlines()
    assert len(log) == cfg.steps + 1 and log[0].startswith("step,lr,loss")
    losses = [float(r.split(",")[3]) for r in log[1:]]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]  # it learns something in 6 steps
    assert [c["step"] for c in json.loads((tmp_path / "m" / "checkpoints.json").read_text())] == [3, 6]
    model, _ = moelab.load_model(str(tmp_path / "m" / "checkpoints" / "step-000003"))
    assert model.config.hidden_size == 32
    assert res["parameters"] == sum(p.numel() for p in model.parameters())
