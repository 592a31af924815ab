"""The sequence tracker is a pure state machine: every feeding pattern, no model."""

import numpy as np
import pytest

from moelab.tracking import Feed, GroupState, SequenceTracker

EOS, PAD = frozenset({2}), frozenset({0})


def feed(st, B, S, past, cache, tags=None):
    return st.assign(Feed(batch=B, length=S, past=past, cache=cache), tags)


def test_a_plain_forward_opens_one_sequence_per_row():
    st = SequenceTracker()
    a = feed(st, 3, 7, 0, None)
    assert (a.seq0, a.step, a.decode) == (0, 0, False) and st.next_seq == 3


def test_forwards_without_a_cache_never_continue_anything():
    st = SequenceTracker()
    feed(st, 2, 4, 0, None)
    b = feed(st, 2, 1, 4, None)       # a longer mask but no cache object: new sequences starting at position 4
    assert (b.seq0, b.step) == (2, 0)


def test_a_cache_created_inside_the_forward_is_bound_afterwards_and_continued():
    st = SequenceTracker()
    a = feed(st, 2, 5, 0, None)
    st.bind(a, cache=7)
    steps = [feed(st, 2, 1, 5 + i, 7) for i in range(3)]
    assert [(s.seq0, s.step, s.decode) for s in steps] == [(0, 1, True), (0, 2, True), (0, 3, True)]


def test_chunked_prefill_continues_with_steps_but_is_not_a_decode():
    st = SequenceTracker()
    a = feed(st, 1, 4, 0, None)
    st.bind(a, 1)
    b, c = feed(st, 1, 4, 4, 1), feed(st, 1, 4, 8, 1)
    assert (b.step, c.step, b.decode, c.seq0) == (1, 2, False, 0)


def test_two_interleaved_caches_keep_their_own_groups():
    st = SequenceTracker()
    a = feed(st, 1, 3, 0, None); st.bind(a, "A")  # noqa: E702
    b = feed(st, 1, 2, 0, None); st.bind(b, "B")  # noqa: E702
    a2, b2 = feed(st, 1, 1, 3, "A"), feed(st, 1, 1, 2, "B")
    assert (a2.seq0, a2.step, b2.seq0, b2.step) == (0, 1, 1, 1)


def test_a_static_cache_passed_at_prefill_is_the_group_key():
    st = SequenceTracker()
    a = feed(st, 2, 5, 0, "static")
    b = feed(st, 2, 1, 5, "static")
    assert (b.seq0, b.step) == (a.seq0, 1)


def test_a_known_cache_with_another_batch_size_opens_new_sequences():
    st = SequenceTracker()
    a = feed(st, 2, 3, 0, None); st.bind(a, "A")  # noqa: E702
    b = feed(st, 1, 1, 3, "A")
    assert (b.seq0, b.step) == (2, 0)


def test_a_cache_longer_than_its_group_wrote_is_not_that_group():
    st = SequenceTracker()
    a = feed(st, 1, 3, 0, None); st.bind(a, "A")  # noqa: E702
    assert feed(st, 1, 1, 9, "A").seq0 == 1


def test_tags_label_the_opened_rows_and_are_checked_against_the_batch():
    st = SequenceTracker()
    a = feed(st, 2, 3, 0, None, {"domain": ["code", "math"], "run": 1})
    assert a.group.tags == {"domain": ["code", "math"], "run": [1, 1]}
    with pytest.raises(ValueError, match="tag 'domain' has 3 values but the batch has 2 rows"):
        feed(st, 2, 3, 0, None, {"domain": ["a", "b", "c"]})


def test_empty_forwards_are_refused():
    with pytest.raises(ValueError, match="at least one token"):
        feed(SequenceTracker(), 0, 3, 0, None)


# ------------------------------------------------------------ generate's filler
def decode(g, tokens, eos=EOS, pad=PAD):
    return g.filter(np.array(tokens)[:, None], decode=True, eos=eos, pad=pad)[:, 0].tolist()


def test_a_finished_row_records_its_eos_then_no_pads():
    g = GroupState(seq0=0, batch=2, end=5)
    assert decode(g, [2, 9]) == [True, True]     # row 0 reads its EOS: recorded
    assert decode(g, [0, 9]) == [False, True]    # then generate pads it: not recorded
    assert decode(g, [0, 2]) == [False, True]


def test_pad_equal_to_eos_records_the_first_and_drops_the_rest():
    g = GroupState(seq0=0, batch=1, end=5)
    assert [decode(g, [2], pad=EOS) for _ in range(3)] == [[True], [False], [False]]


def test_a_live_row_reading_the_pad_id_is_recorded():
    g = GroupState(seq0=0, batch=1, end=5)
    assert decode(g, [0]) == [True]              # a real pad-id token, not filler: it never read an EOS


def test_prefill_chunks_are_never_filtered():
    g = GroupState(seq0=0, batch=1, end=5)
    g.finished[:] = True
    assert g.filter(np.array([[2, 0, 0]]), decode=False, eos=EOS, pad=PAD).all()
