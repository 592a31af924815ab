#!/usr/bin/env python3
"""Build the moelab multi-domain text corpus from package-registry sources.

Pipeline
--------
1. **Fetch** the raw sources into a cache directory outside the repository
   (default ``/tmp/moelab-corpus-src``):

   * Debian packages via ``apt-get download NAME`` + ``dpkg -x`` (nothing is installed);
   * the npm package ``spdx-license-list@6.12.0`` via ``npm pack``;
   * PyPI ``mathematics-dataset==1.0.1`` in a *separate throwaway venv* (it needs
     ``sympy==1.4`` and ``numpy<1.24``, which must never enter the project venv);
   * the CPython 3.11 standard library already on the machine.

   The sha256 of every fetched archive is recorded in the manifest.
2. **Extract and clean** text per domain (see the ``docs_for_*`` functions):
   Unicode NFC, control characters removed (newline/tab kept), trailing spaces
   stripped, runs of blank lines collapsed, exact/near duplicates and templated
   records dropped, untranslated English paragraphs dropped from the FR/DE/ES/IT
   man pages (stopword-ratio filter), documents shorter than ``MIN_DOC_CHARS``
   dropped (math documents are blocks of ``MATH_PAIRS_PER_DOC`` Q/A pairs).
3. **Sample** about ``TARGET_BYTES`` of UTF-8 text per domain: candidate documents
   are visited in the order of a seeded hash of their content/name (inputs are
   sorted first), so the sample is deterministic.
4. **Split** by document: documents are ordered by a seeded hash and the first ones
   go to ``heldout.txt`` until it holds ``HELDOUT_FRACTION`` of the domain's bytes;
   the rest go to ``train.txt``.  Documents are joined with ``DOC_SEP``.
5. **Manifest**: ``data/corpus/MANIFEST.json`` records, per domain, the source
   packages (name, version, licence, archive sha256), sizes, document counts,
   Mixtral-tokenizer token counts and the sha256 of every written file.

Sources (domain -> source, licence)
-----------------------------------
code          CPython 3.11 stdlib ``*.py`` (no test dirs)        PSF-2.0
math          PyPI mathematics-dataset 1.0.1 (generated)         Apache-2.0
fiction       Debian r-cran-janeaustenr (Austen's six novels)    public domain text / MIT package
biomedical    Debian r-bioc-go.db (Gene Ontology term definitions) CC-BY-4.0 (package: Artistic-2.0)
encyclopedic  Debian dict-foldoc (Free On-line Dictionary of Computing) GFDL-1.1+
legal         npm spdx-license-list 6.12.0 (licence texts)       CC0-1.0 (list); texts under their own terms
tex           Debian pari-doc (PARI/GP manuals, TeX source)      GPL-2+
docs_en       Debian manpages (Linux man-pages)                  Linux-man-pages-copyleft / GPL-2+ (per page)
docs_fr/de/es/it  Debian manpages-fr/-de/-es/-it (translations)  GPL-3+

The math generator's output is not reproducible even when seeded, so the math
domain is generated once and committed; ``--domains`` rebuilds only the listed
domains (keeping the other manifest entries), and the generator's raw output is
cached in the cache dir and reused unless ``--regen-math`` is given.

Usage::

    .venv/bin/python scripts/build_corpus.py                 # all domains
    .venv/bin/python scripts/build_corpus.py --domains legal tex
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
import sqlite3
import struct
import subprocess
import sys
import tarfile
import unicodedata
import zlib
from pathlib import Path
from typing import Callable, Iterable, Iterator

# Documents inside train.txt / heldout.txt are joined with this exact separator;
# moelab splits the files on it.  No document contains it.
DOC_SEP = "\n\n<|endofdoc|>\n\n"

SEED = "moelab-corpus-v1"
Unit = list  # documents that must land in the same split (e.g. pieces of one man page)
TARGET_BYTES = 800_000          # UTF-8 bytes sampled per domain (hard cap below)
MAX_DOMAIN_BYTES = 1_000_000
HELDOUT_FRACTION = 0.10
MIN_DOC_CHARS = 200
MAX_DOC_CHARS = 8_000           # long documents are truncated / split to about this
MAX_MANPAGE_CHARS = 32_000     # man pages: truncated to this, then split into documents
MATH_PAIRS_PER_DOC = 20
MATH_PER_MODULE = 220           # Q/A pairs generated per mathematics_dataset train module

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = REPO / "data" / "corpus"
DEFAULT_CACHE = Path("/tmp/moelab-corpus-src")

DOMAINS = ["code", "math", "fiction", "biomedical", "encyclopedic", "legal", "tex",
           "docs_en", "docs_fr", "docs_de", "docs_es", "docs_it"]

DEBIAN_PACKAGES = {
    "fiction": "r-cran-janeaustenr",
    "biomedical": "r-bioc-go.db",
    "encyclopedic": "dict-foldoc",
    "tex": "pari-doc",
    "docs_en": "manpages",
    "docs_fr": "manpages-fr",
    "docs_de": "manpages-de",
    "docs_es": "manpages-es",
    "docs_it": "manpages-it",
}
SPDX_NPM = "spdx-license-list@6.12.0"
MATH_PYPI = ["mathematics-dataset==1.0.1", "sympy==1.4", "numpy<1.24"]

LICENCES = {
    "code": "PSF-2.0",
    "math": "Apache-2.0 (generator); generated text",
    "fiction": "Public domain (novels); MIT (janeaustenr package)",
    "biomedical": "CC-BY-4.0 (Gene Ontology); Artistic-2.0 (GO.db package)",
    "encyclopedic": "GFDL-1.1-or-later (FOLDOC, Denis Howe)",
    "legal": "CC0-1.0 (spdx-license-list); each licence text under its own terms",
    "tex": "GPL-2.0-or-later (PARI/GP documentation)",
    "docs_en": "Linux-man-pages-copyleft / GPL-2.0-or-later (per page)",
    "docs_fr": "GPL-3.0-or-later (translations)",
    "docs_de": "GPL-3.0-or-later (translations)",
    "docs_es": "GPL-3.0-or-later (translations)",
    "docs_it": "GPL-3.0-or-later (translations)",
}


# --------------------------------------------------------------------------- utils

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def seeded_key(text: str) -> str:
    return hashlib.sha256((SEED + "\0" + text).encode("utf-8")).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff\u2028\u2029]")


def clean_text(text: str) -> str:
    """NFC, no control chars except \\n/\\t, no trailing spaces, <=1 blank line in a row."""
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\x0c", "\n")
    text = _CONTROL.sub("", text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n").replace(DOC_SEP.strip(), "<|end of doc|>")


def normalised(text: str) -> str:
    """Key for exact deduplication: lowercase alphanumerics only."""
    return re.sub(r"[\W_]+", " ", text.lower()).strip()


def truncate(text: str, max_chars: int = MAX_DOC_CHARS) -> str:
    """Cut at the last paragraph (or line) boundary before max_chars."""
    if len(text) <= max_chars:
        return text
    cut = text.rfind("\n\n", 0, max_chars)
    if cut < max_chars // 2:
        cut = text.rfind("\n", 0, max_chars)
    if cut < max_chars // 2:
        cut = max_chars
    return text[:cut].rstrip()


def split_long(text: str, max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Pack paragraphs into pieces of at most ~max_chars (a long paragraph stays whole)."""
    pieces, current = [], ""
    for para in text.split("\n\n"):
        if current and len(current) + len(para) + 2 > max_chars:
            pieces.append(current)
            current = para
        else:
            current = f"{current}\n\n{para}" if current else para
    if current:
        pieces.append(current)
    return pieces


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


# --------------------------------------------------------------------------- fetching

class Sources:
    """Fetches and extracts the source archives into the cache dir, remembering provenance."""

    def __init__(self, cache: Path):
        self.cache = cache
        self.cache.mkdir(parents=True, exist_ok=True)
        self._apt_updated = False

    def debian(self, package: str) -> tuple[Path, dict]:
        debs = self.cache / "debs"
        debs.mkdir(exist_ok=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if not found:
            if not self._apt_updated:
                subprocess.run(["apt-get", "update", "-qq"], check=False,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                self._apt_updated = True
            run(["apt-get", "download", "-q", package], cwd=debs,
                stdout=subprocess.DEVNULL)
            found = sorted(debs.glob(f"{package}_*.deb"))
        deb = found[-1]
        root = self.cache / "x" / deb.stem
        if not root.exists():
            root.mkdir(parents=True)
            run(["dpkg", "-x", str(deb), str(root)])
        version = deb.stem.split("_")[1]
        info = {"name": package, "version": version, "registry": "Debian bookworm (apt)",
                "archive": deb.name, "archive_sha256": sha256_file(deb)}
        return root, info

    def npm(self, spec: str) -> tuple[Path, dict]:
        name, version = spec.rsplit("@", 1)
        tgz = self.cache / f"{name}-{version}.tgz"
        if not tgz.exists():
            run(["npm", "pack", "--silent", spec], cwd=self.cache, stdout=subprocess.DEVNULL)
        info = {"name": name, "version": version, "registry": "npm",
                "archive": tgz.name, "archive_sha256": sha256_file(tgz)}
        return tgz, info

    def math_venv(self) -> Path:
        venv = self.cache / "mathvenv"
        python = venv / "bin" / "python"
        if not python.exists():
            run([sys.executable, "-m", "venv", str(venv)])
            run([str(python), "-m", "pip", "install", "-q", *MATH_PYPI])
        return python


# --------------------------------------------------------------------------- code

def stdlib_dir() -> Path:
    for cand in ("/usr/lib/python3.11", "/root/.pyenv/versions/3.11.7/lib/python3.11"):
        if os.path.exists(os.path.join(cand, "os.py")):
            return Path(cand)
    raise FileNotFoundError("CPython 3.11 stdlib not found")


EXCLUDED_CODE_PARTS = {"test", "tests", "idle_test", "site-packages", "dist-packages",
                       "__pycache__", "config-3.11-x86_64-linux-gnu"}


def docs_for_code(src: Sources) -> tuple[Iterator[str], list[dict]]:
    root = stdlib_dir()
    files = sorted(p for p in root.rglob("*.py")
                   if not EXCLUDED_CODE_PARTS & set(p.relative_to(root).parts[:-1]))
    files.sort(key=lambda p: seeded_key(str(p.relative_to(root))))

    def gen():
        for path in files:
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                continue
            yield truncate(clean_text(text))

    info = {"name": "CPython standard library", "version": "3.11", "path": str(root),
            "registry": "local Python 3.11 install (pyenv)"}
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libpython3.11-stdlib"],
                             capture_output=True, text=True, check=True)
        info = {"name": "libpython3.11-stdlib", "version": out.stdout.strip(),
                "registry": "Debian bookworm (installed)", "path": str(root)}
    except (subprocess.CalledProcessError, FileNotFoundError):
        pass
    return gen(), [info]


# --------------------------------------------------------------------------- math

MATH_GENERATOR = r'''
import json, random, sys
import numpy as np
from mathematics_dataset import generate_settings
from mathematics_dataset.modules import modules
random.seed(int(sys.argv[2])); np.random.seed(int(sys.argv[2]))

def flatten(d, prefix=""):
    for k in sorted(d):
        name = prefix + "__" + k if prefix else k
        if isinstance(d[k], dict):
            yield from flatten(d[k], name)
        else:
            yield name, d[k]

per_module = int(sys.argv[1])
for name, module in flatten(modules.train(lambda r: r)):
    for _ in range(per_module):
        while True:
            p = module()
            q, a = str(p.question), str(p.answer)
            if len(q) <= generate_settings.MAX_QUESTION_LENGTH and \
               len(a) <= generate_settings.MAX_ANSWER_LENGTH:
                break
        print(json.dumps({"module": name, "question": q, "answer": a}))
'''


def docs_for_math(src: Sources, regen: bool) -> tuple[Iterator[str], list[dict]]:
    raw = src.cache / "math_raw.jsonl"
    if regen or not raw.exists():
        python = src.math_venv()
        log("  generating mathematics_dataset problems (a few minutes)...")
        with open(raw.with_suffix(".tmp"), "w") as f:
            run([str(python), "-c", MATH_GENERATOR, str(MATH_PER_MODULE), "1"], stdout=f,
                stderr=subprocess.DEVNULL)
        raw.with_suffix(".tmp").rename(raw)
    by_module: dict[str, list[str]] = {}
    for line in raw.read_text().splitlines():
        rec = json.loads(line)
        pair = f"Question: {clean_text(rec['question'])}\nAnswer: {clean_text(rec['answer'])}"
        by_module.setdefault(rec["module"], []).append(pair)
    docs = []
    for module in sorted(by_module):
        pairs = list(dict.fromkeys(by_module[module]))  # drop exact duplicates
        for i in range(0, len(pairs) - MATH_PAIRS_PER_DOC + 1, MATH_PAIRS_PER_DOC):
            docs.append("\n\n".join(pairs[i:i + MATH_PAIRS_PER_DOC]))
    docs.sort(key=seeded_key)
    info = {"name": "mathematics-dataset", "version": "1.0.1", "registry": "PyPI",
            "generator_env": MATH_PYPI, "raw_output_sha256": sha256_file(raw),
            "note": "generated once and committed; output is not reproducible"}
    return iter(docs), [info]


# --------------------------------------------------------------------------- fiction

class RUnserializer:
    """Minimal reader for R's XDR serialization format (enough for character vectors)."""

    NILVALUE, SYM, LIST, CHAR, LGL, INT, REAL, STR, VEC, REF = 254, 1, 2, 9, 10, 13, 14, 16, 19, 255
    SPECIAL_NO_DATA = {242, 241, 253, 251, 252, 250, 249, 248, 246}  # envs, missing arg...

    def __init__(self, data: bytes):
        self.data, self.pos, self.refs = data, 0, []

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def parse(self):
        assert self.data[:2] == b"X\n", "only XDR serialization is supported"
        self.pos = 2
        version = self.int()
        self.int(), self.int()
        if version == 3:
            encoding_length = self.int()
            self.pos += encoding_length
        return self.item()

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == self.NILVALUE or kind in self.SPECIAL_NO_DATA:
            return None
        if kind == self.REF:
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if kind == self.SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == self.CHAR:
            n = self.int()
            if n == -1:
                return None
            s = self.data[self.pos:self.pos + n].decode("utf-8", "replace")
            self.pos += n
            return s
        if kind == self.LIST:
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            car = self.item()
            cdr = self.item()
            return [(tag, car)] + (cdr or [])
        if kind in (self.STR, self.VEC):
            n = self.int()
            value = [self.item() for _ in range(n)]
        elif kind in (self.LGL, self.INT):
            n = self.int()
            value = list(struct.unpack_from(f">{n}i", self.data, self.pos))
            self.pos += 4 * n
        elif kind == self.REAL:
            n = self.int()
            value = list(struct.unpack_from(f">{n}d", self.data, self.pos))
            self.pos += 8 * n
        else:
            raise ValueError(f"unsupported R SEXP type {kind}")
        if has_attr:
            self.item()
        return value


class RNamedUnserializer(RUnserializer):
    """Like RUnserializer but returns named lists as dicts."""

    def item(self):
        flags = self.int()
        self.pos -= 4
        kind, has_attr = flags & 0xFF, flags & (1 << 9)
        if kind == self.VEC and has_attr:
            self.pos += 4
            n = self.int()
            values = [self.item() for _ in range(n)]
            attrs = dict(self.item())
            names = attrs.get("names")
            return dict(zip(names, values)) if names else values
        return super().item()


def read_rdata_named(db_dir: Path) -> dict[str, object]:
    index = RNamedUnserializer(gzip.decompress((db_dir / "Rdata.rdx").read_bytes())).parse()
    blob = (db_dir / "Rdata.rdb").read_bytes()
    objects = {}
    for name in sorted(index["variables"]):
        offset, length = index["variables"][name]
        record = blob[offset:offset + length]
        objects[name] = RUnserializer(zlib.decompress(record[4:])).parse()
    return objects


CHAPTER_RE = re.compile(r"^(CHAPTER|Chapter)\s+[0-9IVXLC]+\.?\s*$")


def docs_for_fiction(src: Sources) -> tuple[Iterator[Unit], list[dict]]:
    root, info = src.debian(DEBIAN_PACKAGES["fiction"])
    objects = read_rdata_named(root / "usr/lib/R/site-library/janeaustenr/data")
    docs = []
    for name in sorted(objects):
        lines = objects[name]
        if not isinstance(lines, list) or not lines or not isinstance(lines[0], (str, type(None))):
            continue
        chapters, current = [], []
        for line in lines:
            line = line or ""
            if CHAPTER_RE.match(line.strip()) and current:
                chapters.append(current)
                current = []
            current.append(line)
        chapters.append(current)
        for chapter in chapters[1:] if len(chapters) > 1 else chapters:
            text = clean_text(reflow("\n".join(chapter)))
            docs.append(split_long(text))  # a chapter's pieces stay in one split
    docs.sort(key=lambda unit: seeded_key(unit[0]))
    info["objects"] = sorted(objects)
    return iter(docs), [info]


def reflow(text: str) -> str:
    """Join hard-wrapped lines of a paragraph (blank lines separate paragraphs)."""
    paras = re.split(r"\n\s*\n", text)
    joined = (" ".join(l.strip() for l in p.split("\n") if l.strip()) for p in paras)
    return "\n\n".join(re.sub(r" {2,}", " ", p) for p in joined)


# --------------------------------------------------------------------------- biomedical

def go_template_key(term: str, definition: str) -> str:
    """Definition with the term's words blanked out: identical keys = templated records."""
    words = {w for w in re.findall(r"[\w\-]+", term.lower()) if len(w) > 2}
    tokens = re.findall(r"[\w\-]+|[^\w\s]", definition.lower())
    key = " ".join("_" if t in words else t for t in tokens)
    return re.sub(r"(_ ?)+", "_ ", key)


def docs_for_biomedical(src: Sources) -> tuple[Iterator[str], list[dict]]:
    root, info = src.debian(DEBIAN_PACKAGES["biomedical"])
    db = sqlite3.connect(root / "usr/lib/R/site-library/GO.db/extdata/GO.sqlite")
    rows = db.execute("SELECT go_id, term, definition FROM go_term "
                      "WHERE definition IS NOT NULL ORDER BY go_id").fetchall()
    rows = [(g, clean_text(t), clean_text(d)) for g, t, d in rows if d and t]
    template_counts: dict[str, int] = {}
    for _, term, definition in rows:
        key = go_template_key(term, definition)
        template_counts[key] = template_counts.get(key, 0) + 1
    seen, records = set(), []
    for _, term, definition in rows:
        if template_counts[go_template_key(term, definition)] >= 3:
            continue  # templated ("Any process that activates ... of X.")
        if definition.lower().startswith("obsolete") or len(definition) < 40:
            continue
        norm = normalised(definition)
        if norm in seen:
            continue
        seen.add(norm)
        records.append(f"{term[0].upper()}{term[1:]}\n{definition}")
    info["records_total"], info["records_kept"] = len(rows), len(records)
    docs, current = [], []
    for record in records:  # consecutive GO ids -> related terms; ~1.5 KB documents
        current.append(record)
        if sum(len(r) for r in current) >= 1500:
            docs.append("\n\n".join(current))
            current = []
    docs.sort(key=seeded_key)
    return iter(docs), [info]


# --------------------------------------------------------------------------- encyclopedic

def docs_for_encyclopedic(src: Sources) -> tuple[Iterator[str], list[dict]]:
    root, info = src.debian(DEBIAN_PACKAGES["encyclopedic"])
    raw = gzip.decompress((root / "usr/share/dictd/foldoc.dict.dz").read_bytes())
    text = raw.decode("utf-8", "replace")
    entries, head, body = [], None, []
    for line in text.split("\n"):
        if line and not line[0].isspace():
            if head is not None:
                entries.append((head, body))
            head, body = line.strip(), []
        elif head is not None:
            body.append(line)
    if head is not None:
        entries.append((head, body))
    docs, seen = [], set()
    for head, body in entries:
        if head.startswith("00") or head.lower().startswith("00-database"):
            continue
        lines = [l[3:] if l.startswith("   ") else l.lstrip("\t") for l in body]
        lines = [l for l in lines if not re.fullmatch(r"\s*\(\d{4}-\d{2}-\d{2}\)\s*", l)]
        content = reflow("\n".join(lines))
        content = re.sub(r"\{([^{}]*)\}", r"\1", content)
        doc = clean_text(f"{head}\n\n{content}")
        norm = normalised(content)
        if len(doc) < MIN_DOC_CHARS or norm in seen:
            continue
        seen.add(norm)
        docs.append(truncate(doc))
    docs.sort(key=seeded_key)
    return iter(docs), [info]


# --------------------------------------------------------------------------- legal

def shingles(text: str, n: int = 5) -> set[int]:
    words = normalised(text).split()
    return {hash(" ".join(words[i:i + n])) for i in range(max(1, len(words) - n + 1))}


def docs_for_legal(src: Sources) -> tuple[Iterator[str], list[dict]]:
    tgz, info = src.npm(SPDX_NPM)
    with tarfile.open(tgz) as tar:
        licences = json.load(tar.extractfile("package/spdx-full.json"))
    kept: list[tuple[str, set[int]]] = []
    seen = set()
    for spdx_id in sorted(licences):
        text = clean_text(licences[spdx_id].get("licenseText") or "")
        if len(text) < MIN_DOC_CHARS:
            continue
        norm = normalised(text)
        if norm in seen:
            continue
        seen.add(norm)
        doc = truncate(text)
        sh = shingles(doc)
        if any(len(sh & other) / max(1, len(sh | other)) > 0.6 for _, other in kept):
            continue  # near-duplicate (e.g. -only / -or-later / variant clauses)
        kept.append((doc, sh))
    info["licences_total"], info["licences_kept"] = len(licences), len(kept)
    docs = sorted((d for d, _ in kept), key=seeded_key)
    return iter(docs), [info]


# --------------------------------------------------------------------------- tex

TEX_SPLIT_RE = re.compile(r"^(?=\\(?:chapter|section|subsection|subsec|subsubsec)\b)", re.M)
TEX_SKIP = {"parimacro.tex", "pdfmacs.tex", "paricfg.tex", "users.tex"}


def docs_for_tex(src: Sources) -> tuple[Iterator[Unit], list[dict]]:
    root, info = src.debian(DEBIAN_PACKAGES["tex"])
    docs = []
    for path in sorted((root / "usr/share/pari/doc").glob("*.tex")):
        if path.name in TEX_SKIP:
            continue
        text = clean_text(path.read_text(encoding="utf-8", errors="replace"))
        sections, current = [], ""
        for part in TEX_SPLIT_RE.split(text):
            current = f"{current}\n\n{part}".strip() if current else part.strip()
            if len(current) >= 1000:
                sections.append(current)
                current = ""
        if current:
            sections.append(current)
        docs.extend(split_long(section) for section in sections)
    docs.sort(key=lambda unit: seeded_key(unit[0]))
    return iter(docs), [info]


# --------------------------------------------------------------------------- man pages

STOPWORDS = {
    "en": set("the and of to is that this with for are be by which it or if when from not "
              "can will was has have these such should used using you your must only than "
              "then there their its been into does any other all".split()),
    "fr": set("le la les des du un une est et que qui dans pour pas sur avec sont ce cette "
              "par au aux ou être peut si leur plus fichier".split()),
    "de": set("der die das und ist nicht ein eine mit für den dem des von zu auf wird werden "
              "sich auch oder wenn kann diese sind bei als dass".split()),
    "es": set("el la los las de que y en un una es por con para no se del al como su más "
              "este esta son puede si o".split()),
    "it": set("il lo la gli le di che e è un una per con non del della dei delle nel sono "
              "come si al da questo questa può se o".split()),
}


def stopword_counts(text: str, lang: str) -> tuple[int, int]:
    words = re.findall(r"[^\W\d_]+", text.lower())
    return (sum(w in STOPWORDS["en"] for w in words), sum(w in STOPWORDS[lang] for w in words))


def is_english_paragraph(para: str, lang: str) -> bool:
    en, native = stopword_counts(para, lang)
    return en >= 2 and en > native


TRANSLATION_CREDITS = {"TRADUCTION", "ÜBERSETZUNG", "TRADUCCIÓN", "TRADUZIONE"}


def drop_translation_credits(text: str) -> str:
    """Remove the boilerplate translators/licence section that ends every translated page."""
    out, skipping = [], False
    for line in text.split("\n"):
        if line and not line[0].isspace():
            skipping = line.strip() in TRANSLATION_CREDITS
        if not skipping:
            out.append(line)
    return clean_text("\n".join(out))


def render_manpage(path: Path) -> str:
    """Render one gzipped man page to plain UTF-8 text with groff (no hyphenation)."""
    source = gzip.decompress(path.read_bytes())
    if source.lstrip().startswith(b".so ") or len(source) < 300:
        return ""
    # no hyphenation and no justification (ragged right), even where a page asks for it
    source = b".nh\n.rm hy\n.ad l\n.rm ad\n" + source
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
    proc = subprocess.run(["groff", "-k", "-mandoc", "-Tutf8", "-P-cbou", "-rHY=0",
                           "-rLL=80n", "-t"], input=source, capture_output=True, env=env)
    text = proc.stdout.decode("utf-8", "replace")
    lines = text.strip("\n").split("\n")
    if len(lines) > 4:  # drop the running header and footer lines
        lines = lines[1:-1]
    return clean_text("\n".join(lines))


def manpage_files(root: Path, lang: str | None) -> list[Path]:
    base = root / "usr/share/man" / (lang or "")
    files = sorted(p for p in base.glob("man*/*.gz"))
    files.sort(key=lambda p: seeded_key(p.name))
    return files


def docs_for_manpages(src: Sources, domain: str) -> tuple[Iterator[Unit], list[dict]]:
    """One unit per man page: its (<= MAX_DOC_CHARS) pieces stay in the same split."""
    lang = domain.split("_")[1]
    root, info = src.debian(DEBIAN_PACKAGES[domain])
    files = manpage_files(root, None if lang == "en" else lang)
    stats = {"pages_seen": 0, "paragraphs_dropped_english": 0}
    info["filter_stats"] = stats

    def gen():
        for path in files:
            text = render_manpage(path)
            if not text:
                continue
            stats["pages_seen"] += 1
            if lang != "en":
                text = drop_translation_credits(text)
                paras = text.split("\n\n")
                kept = [p for p in paras if not is_english_paragraph(p, lang)]
                stats["paragraphs_dropped_english"] += len(paras) - len(kept)
                text = "\n\n".join(kept)
                en, native = stopword_counts(text, lang)
                if native < 2 * en:
                    continue  # mostly untranslated page
            yield split_long(truncate(text, MAX_MANPAGE_CHARS))

    return gen(), [info]


# --------------------------------------------------------------------------- sampling, split, output

def sample(items: Iterable[str | Unit], budget: int = TARGET_BYTES) -> list[Unit]:
    """Take units (a document or a list of documents) in the given seeded order until
    ~budget UTF-8 bytes, skipping short documents and exact (normalised) duplicates."""
    chosen, seen, total = [], set(), 0
    for item in items:
        unit = []
        for doc in [item] if isinstance(item, str) else item:
            norm = normalised(doc)
            if len(doc) < MIN_DOC_CHARS or DOC_SEP.strip() in doc or norm in seen:
                continue
            seen.add(norm)
            unit.append(doc)
        size = sum(len(d.encode("utf-8")) + len(DOC_SEP) for d in unit)
        if not unit or total + size > MAX_DOMAIN_BYTES:
            continue
        chosen.append(unit)
        total += size
        if total >= budget:
            break
    return chosen


def split_heldout(units: list[Unit]) -> tuple[list[str], list[str]]:
    """Order units by seeded hash; the first ones form ~HELDOUT_FRACTION of the bytes.
    Returns the (train, heldout) documents."""
    ordered = sorted(units, key=lambda u: seeded_key(u[0]))
    nbytes = [sum(len(d.encode("utf-8")) for d in u) for u in ordered]
    n_heldout, size = 0, 0
    while size < HELDOUT_FRACTION * sum(nbytes):
        size += nbytes[n_heldout]
        n_heldout += 1
    flatten = lambda us: [d for u in us for d in u]
    return flatten(ordered[n_heldout:]), flatten(ordered[:n_heldout])


def load_tokenizer():
    import mistral_common
    import sentencepiece as spm
    model = os.path.join(os.path.dirname(mistral_common.__file__), "data", "tokenizer.model.v1")
    return spm.SentencePieceProcessor(model_file=model)


def count_tokens(tokenizer, docs: list[str]) -> int:
    return sum(len(ids) for ids in tokenizer.encode(docs))


def write_domain(domain: str, units: list[Unit], sources: list[dict], tokenizer) -> dict:
    train, heldout = split_heldout(units)
    out = OUT_DIR / domain
    out.mkdir(parents=True, exist_ok=True)
    entry = {"sources": sources, "licence": LICENCES[domain], "doc_separator": DOC_SEP,
             "files": {}}
    for split, split_docs in (("train", train), ("heldout", heldout)):
        path = out / f"{split}.txt"
        path.write_text(DOC_SEP.join(split_docs) + "\n", encoding="utf-8")
        entry["files"][split] = {
            "path": str(path.relative_to(REPO)), "sha256": sha256_file(path),
            "bytes": path.stat().st_size, "documents": len(split_docs),
            "mixtral_tokens": count_tokens(tokenizer, split_docs),
        }
    entry["bytes"] = sum(f["bytes"] for f in entry["files"].values())
    entry["documents"] = sum(f["documents"] for f in entry["files"].values())
    entry["mixtral_tokens"] = sum(f["mixtral_tokens"] for f in entry["files"].values())
    return entry


def build_domain(domain: str, src: Sources, regen_math: bool):
    builders: dict[str, Callable[[], tuple[Iterator[str | Unit], list[dict]]]] = {
        "code": lambda: docs_for_code(src),
        "math": lambda: docs_for_math(src, regen_math),
        "fiction": lambda: docs_for_fiction(src),
        "biomedical": lambda: docs_for_biomedical(src),
        "encyclopedic": lambda: docs_for_encyclopedic(src),
        "legal": lambda: docs_for_legal(src),
        "tex": lambda: docs_for_tex(src),
    }
    if domain.startswith("docs_"):
        docs, sources = docs_for_manpages(src, domain)
    else:
        docs, sources = builders[domain]()
    return sample(docs), sources


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--domains", nargs="+", choices=DOMAINS, default=DOMAINS)
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE,
                        help="where sources are downloaded and extracted (outside the repo)")
    parser.add_argument("--regen-math", action="store_true",
                        help="rerun the math generator even if its cached output exists")
    args = parser.parse_args(argv)

    src = Sources(args.cache)
    tokenizer = load_tokenizer()
    manifest_path = OUT_DIR / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    domains = manifest.get("domains", {})
    for domain in args.domains:
        log(f"[{domain}] building")
        docs, sources = build_domain(domain, src, args.regen_math)
        domains[domain] = write_domain(domain, docs, sources, tokenizer)
        e = domains[domain]
        log(f"[{domain}] {e['documents']} docs, {e['bytes']} bytes, {e['mixtral_tokens']} tokens")
    manifest = {
        "description": "moelab multi-domain corpus; see data/README.md",
        "doc_separator": DOC_SEP,
        "seed": SEED,
        "tokenizer": "mistral_common/data/tokenizer.model.v1 (Mixtral 8x7B SentencePiece)",
        "builder": "scripts/build_corpus.py",
        "domains": {d: domains[d] for d in DOMAINS if d in domains},
    }
    manifest["total_bytes"] = sum(e["bytes"] for e in manifest["domains"].values())
    manifest["total_mixtral_tokens"] = sum(e["mixtral_tokens"]
                                           for e in manifest["domains"].values())
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    log(f"total {manifest['total_bytes']} bytes, {manifest['total_mixtral_tokens']} tokens")


if __name__ == "__main__":
    main()
