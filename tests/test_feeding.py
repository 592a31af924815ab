"""Every way a model is fed is recorded exactly.

For each feeding pattern, every recorded token's (id, position, experts) must
equal one fresh no-cache fp32 forward over the same real tokens of its sequence,
and each sequence must hold exactly the tokens the model read: none dropped,
none duplicated, no padding, no filler.
"""

import numpy as np
import pytest
import torch
from conftest import CACHE_KW, VOCAB, cache_of, tiny_mixtral

import moelab
from moelab.tracer import TracingError

EOS, PAD = 2, 0


@pytest.fixture(scope="module")
def model():
    return tiny_mixtral()


def fresh(model, token_ids) -> moelab.RoutingTrace:
    with torch.no_grad(), moelab.trace(model) as ref:
        model(torch.as_tensor(np.asarray(token_ids))[None], use_cache=False)
    return ref


def assert_exact(model, tr, expected: dict[int, list[int]]):
    """Sequence s holds exactly `expected[s]`, at positions 0.., routed as a fresh forward routes them."""
    assert sorted(set(tr.sequence.tolist())) == sorted(expected)
    for s, tokens in expected.items():
        t = tr.select(tr.sequence == s).sorted()
        assert t.token_id.tolist() == list(tokens), f"sequence {s}"
        assert t.position.tolist() == list(range(len(tokens))), f"sequence {s}"
        np.testing.assert_array_equal(t.experts, fresh(model, tokens).experts, err_msg=f"sequence {s}")


def prompts(*lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, VOCAB, (n,), generator=g) for n in lengths]


def padded(rows, side):
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), PAD)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        sl = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        ids[i, sl], mask[i, sl] = r, 1
    return ids, mask


def generated(out, width, row):
    """Tokens generate produced for one row (after the prompt block)."""
    return out[row, width:].tolist()


# ---------------------------------------------------------------- plain forwards
@pytest.mark.parametrize("side", ["left", "right"])
def test_a_padded_forward_records_only_real_tokens(model, side):
    rows = prompts(3, 6, 1)
    ids, mask = padded(rows, side)
    with torch.no_grad(), moelab.trace(model) as tr:
        model(ids, attention_mask=mask)
    assert_exact(model, tr, {i: r.tolist() for i, r in enumerate(rows)})


def test_a_forward_without_mask_records_every_token(model):
    rows = prompts(5, 5)
    with torch.no_grad(), moelab.trace(model) as tr:
        model(torch.stack(rows))
    assert_exact(model, tr, {i: r.tolist() for i, r in enumerate(rows)})


# ---------------------------------------------------------------- generate
@pytest.mark.slow
@pytest.mark.parametrize("sample", [False, True])
@pytest.mark.parametrize("side", ["left", "right"])
def test_generate_with_padding_records_each_read_token_once(model, sample, side):
    rows = prompts(2, 5, 4, seed=1)
    ids, mask = padded(rows, side)
    torch.manual_seed(0)
    new = 5
    with torch.no_grad(), moelab.trace(model) as tr:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=sample,
                             pad_token_id=PAD, eos_token_id=None)
    width = ids.shape[1]
    assert_exact(model, tr, {i: r.tolist() + generated(out, width, i)[:-1] for i, r in enumerate(rows)})
    assert sorted(set(tr.step.tolist())) == list(range(new))


def test_generate_without_an_attention_mask_continues_the_cache(model):
    (row,) = prompts(6, seed=2)
    with torch.no_grad(), moelab.trace(model) as tr:
        out = model.generate(row[None], max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=PAD,
                             eos_token_id=None)
    assert_exact(model, tr, {0: row.tolist() + generated(out, 6, 0)[:-1]})
    assert tr.step.tolist() == [0] * 6 + [1, 2, 3]


def test_generate_with_a_static_cache(model):
    rows = prompts(3, 5, seed=3)
    ids, mask = padded(rows, "left")
    with torch.no_grad(), moelab.trace(model) as tr:
        out = model.generate(ids, attention_mask=mask, max_new_tokens=4, min_new_tokens=4, do_sample=False,
                             pad_token_id=PAD, eos_token_id=None, cache_implementation="static")
    assert_exact(model, tr, {i: r.tolist() + generated(out, 5, i)[:-1] for i, r in enumerate(rows)})


@pytest.mark.slow
@pytest.mark.parametrize("how", ["generate_argument", "generation_config"])
def test_rows_finished_by_eos_record_their_eos_and_no_filler(model, how):
    rows = prompts(5, 5, seed=4)
    ids = torch.stack(rows)
    with torch.no_grad():
        free = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    eos = int(free[0, 6])                  # row 0's second generated token becomes the EOS
    assert eos not in free[1, 5:].tolist() and eos not in free[0, 5:6].tolist(), "pick another seed"
    kw = {"eos_token_id": eos} if how == "generate_argument" else {}
    saved = model.generation_config.eos_token_id
    if how == "generation_config":
        model.generation_config.eos_token_id = eos
    try:
        with torch.no_grad(), moelab.trace(model) as tr:
            out = model.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=PAD, **kw)
    finally:
        model.generation_config.eos_token_id = saved
    assert (out[0, 7:] == PAD).all() and out.shape[1] == 11          # row 0 was padded while row 1 went on
    assert_exact(model, tr, {0: rows[0].tolist() + out[0, 5:7].tolist(), 1: rows[1].tolist() + out[1, 5:10].tolist()})


def test_beam_search_is_refused_rather_than_recorded_wrongly(model):
    (row,) = prompts(4)
    with moelab.trace(model) as tr, pytest.raises(TracingError, match="beam search"):
        model.generate(row[None], num_beams=2, max_new_tokens=3, pad_token_id=PAD)
    assert tr.num_tokens == 0
    assert "generate" not in model.__dict__                             # the generate observer is gone too


# ---------------------------------------------------------------- caches fed by hand
def test_chunked_prefill_with_an_eos_inside_a_chunk_loses_nothing(model):
    (row,) = prompts(12, seed=5)
    row[5] = EOS
    with torch.no_grad(), moelab.trace(model) as tr:
        cache = None
        for start in (0, 4, 8):
            mask = torch.ones(1, start + 4, dtype=torch.long)               # the mask covers cache + chunk
            out = model(row[None, start:start + 4], attention_mask=mask, **{CACHE_KW: cache}, use_cache=True)
            cache = cache_of(out)
        nxt = out.logits[:, -1].argmax(-1, keepdim=True)
        model(nxt, attention_mask=torch.ones(1, 13, dtype=torch.long), **{CACHE_KW: cache}, use_cache=True)
    assert_exact(model, tr, {0: row.tolist() + nxt[0].tolist()})
    assert tr.step.tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3]


def test_two_caches_interleaved_keep_their_own_sequences(model):
    a, b = prompts(5, 3, seed=6)
    with torch.no_grad(), moelab.trace(model) as tr:
        ca = cache_of(model(a[None, :3], use_cache=True))
        cb = cache_of(model(b[None, :2], use_cache=True))
        model(a[None, 3:], **{CACHE_KW: ca}, use_cache=True)
        model(b[None, 2:], past_key_values=cb, use_cache=True)             # 5.24's deprecated keyword works too
    assert_exact(model, tr, {0: a.tolist(), 1: b.tolist()})
    assert tr.select(tr.sequence == 0).step.tolist() == [0, 0, 0, 1, 1]


def test_a_cache_passed_positionally_to_the_decoder_stack_is_recognised(model):
    (a,) = prompts(6, seed=7)
    with torch.no_grad(), moelab.trace(model) as tr:
        out = model.model(a[None, :4], None, None, None, use_cache=True)   # (ids, mask, positions, cache, ...)
        model.model(a[None, 4:], None, None, cache_of(out), use_cache=True)
    assert_exact(model, tr, {0: a.tolist()})
