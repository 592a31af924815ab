"""Offline checks of the committed text corpus in data/corpus (built by scripts/build_corpus.py)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parent.parent / "data" / "corpus"
DOC_SEP = "\n\n<|endofdoc|>\n\n"
DOMAINS = ["code", "math", "fiction", "biomedical", "encyclopedic", "legal", "tex",
           "docs_en", "docs_fr", "docs_de", "docs_es", "docs_it"]
SPLITS = ["train", "heldout"]
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")

EN_STOPWORDS = set("the and of to is that this with for are be by which it or if when from "
                   "not can will was has have these such should".split())
NATIVE_STOPWORDS = {
    "fr": set("le la les des du un une est et que qui dans pour pas sur avec sont ce".split()),
    "de": set("der die das und ist nicht ein eine mit für den dem des von zu auf wird".split()),
    "es": set("el la los las de que y en un una es por con para no se del al".split()),
    "it": set("il lo la gli le di che e è un una per con non del della nel sono".split()),
}


def read_bytes(domain: str, split: str) -> bytes:
    return (CORPUS / domain / f"{split}.txt").read_bytes()


def documents(domain: str, split: str) -> list[str]:
    return read_bytes(domain, split).decode("utf-8").rstrip("\n").split(DOC_SEP)


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((CORPUS / "MANIFEST.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("domain", DOMAINS)
def test_domain_files_exist_and_are_non_empty(domain):
    for split in SPLITS:
        path = CORPUS / domain / f"{split}.txt"
        assert path.is_file(), path
        assert path.stat().st_size > 10_000, path


@pytest.mark.parametrize("domain", DOMAINS)
def test_heldout_fraction(domain):
    train, heldout = (len(read_bytes(domain, s)) for s in SPLITS)
    assert 0.05 <= heldout / (train + heldout) <= 0.20


def test_total_size_is_reasonable():
    total = sum(len(read_bytes(d, s)) for d in DOMAINS for s in SPLITS)
    assert 5_000_000 <= total <= 12_000_000


def test_manifest_hashes_and_sizes_match(manifest):
    assert manifest["doc_separator"] == DOC_SEP
    assert set(manifest["domains"]) == set(DOMAINS)
    for domain in DOMAINS:
        entry = manifest["domains"][domain]
        assert entry["licence"]
        for split in SPLITS:
            info = entry["files"][split]
            data = read_bytes(domain, split)
            assert hashlib.sha256(data).hexdigest() == info["sha256"], (domain, split)
            assert len(data) == info["bytes"]
            assert len(documents(domain, split)) == info["documents"]
            assert info["mixtral_tokens"] > 0


@pytest.mark.parametrize("domain", DOMAINS)
def test_no_document_in_both_splits(domain):
    train, heldout = (set(documents(domain, s)) for s in SPLITS)
    assert not train & heldout


@pytest.mark.parametrize("domain", DOMAINS)
def test_valid_utf8_without_control_characters(domain):
    for split in SPLITS:
        text = read_bytes(domain, split).decode("utf-8")  # raises if invalid
        match = CONTROL.search(text)
        assert match is None, (domain, split, repr(match.group()) if match else None)
        assert "\r" not in text


@pytest.mark.parametrize("domain", DOMAINS)
def test_documents_are_not_tiny(domain):
    for split in SPLITS:
        docs = documents(domain, split)
        assert all(doc.strip() for doc in docs)
        short = [d for d in docs if len(d) < 150]
        assert len(short) <= 0.01 * len(docs), (domain, split, short[:3])


def test_math_is_question_answer_pairs():
    doc = documents("math", "train")[0]
    assert doc.startswith("Question: ")
    assert doc.count("Question: ") == doc.count("\nAnswer: ") >= 10


@pytest.mark.parametrize("lang", sorted(NATIVE_STOPWORDS))
def test_translated_docs_are_mostly_not_english(lang):
    text = "\n".join(doc for split in SPLITS for doc in documents(f"docs_{lang}", split))
    words = re.findall(r"[^\W\d_]+", text.lower())
    english = sum(w in EN_STOPWORDS for w in words)
    native = sum(w in NATIVE_STOPWORDS[lang] for w in words)
    assert native > 3 * english, (lang, native, english)


def test_english_docs_are_english():
    words = re.findall(r"[^\W\d_]+", "\n".join(documents("docs_en", "train")).lower())
    assert sum(w in EN_STOPWORDS for w in words) > 0.1 * len(words)
