"""notebook_params: the six parameter cells as one call."""

import pytest

from moelab.params import NotebookParams, notebook_params


def test_defaults_when_nothing_is_set():
    assert notebook_params(environ={}) == NotebookParams()
    assert notebook_params(docs_per_domain=24, environ={}).docs_per_domain == 24


def test_every_variable_is_read():
    env = {"MOELAB_MODEL": "/m", "MOELAB_DTYPE": "float16", "MOELAB_DEVICE": "cuda", "MOELAB_DOCS_PER_DOMAIN": "7",
           "MOELAB_SEQ_LEN": "99", "MOELAB_FIGURES": "/tmp/f", "MOELAB_FAST": "0"}
    assert notebook_params(environ=env) == NotebookParams("/m", "float16", "cuda", 7, 99, "/tmp/f", False)


def test_empty_variables_count_as_unset():
    env = {"MOELAB_MODEL": "", "MOELAB_SEQ_LEN": "", "MOELAB_FIGURES": "", "MOELAB_FAST": ""}
    assert notebook_params(seq_len=64, environ=env) == NotebookParams(seq_len=64)


def test_fast_mode_caps_the_sizes():
    p = notebook_params(docs_per_domain=24, environ={"MOELAB_FAST": "1"})
    assert (p.fast, p.docs_per_domain, p.seq_len) == (True, 2, 128)
    assert notebook_params(environ={"MOELAB_FAST": "1", "MOELAB_SEQ_LEN": "32"}).seq_len == 32


def test_reads_os_environ_by_default(monkeypatch):
    monkeypatch.setenv("MOELAB_SEQ_LEN", "77")
    assert notebook_params().seq_len == 77


@pytest.mark.parametrize("env, match", [({"MOELAB_SEQ_LEN": "lots"}, "MOELAB_SEQ_LEN='lots'"),
                                        ({"MOELAB_DOCS_PER_DOMAIN": "0"}, "at least 1"),
                                        ({"MOELAB_FAST": "maybe"}, "MOELAB_FAST='maybe'"),
                                        ({"MOELAB_DEVICE": "tpu"}, "MOELAB_DEVICE='tpu'")])
def test_bad_values_are_named(env, match):
    with pytest.raises(ValueError, match=match):
        notebook_params(environ=env)
