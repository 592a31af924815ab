"""The corpus and Mixtral's tokenizer.

    >>> import moelab
    >>> tok = moelab.load_tokenizer()
    >>> tok("Hello world")["input_ids"]                # BOS + SentencePiece pieces
    [1, 22557, 1526]
    >>> batch = tok(["a", "b c"], return_tensors="pt", padding=True)   # left-padded
    >>> batch["input_ids"].shape, batch["attention_mask"].tolist()
    (torch.Size([2, 3]), [[0, 1, 1], [1, 1, 1]])
    >>> sorted(moelab.load_corpus("heldout"))[:3]
    ['biomedical', 'code', 'docs_de']

The tokenizer is Mixtral 8x7B's own: the SentencePiece model
`tokenizer.model.v1` (32,000 pieces) that ships inside the `mistral-common`
package. transformers' conversion of it to a fast tokenizer does not reproduce
SentencePiece's ids exactly (leading spaces, BOS), so moelab wraps
SentencePiece directly with the transformers calling convention.

The corpus lives in `data/corpus/<domain>/{train,heldout}.txt` (see
data/README.md); documents are separated by `DOC_SEP`. `data_dir()` finds
`data/`: `$MOELAB_DATA` if set, else the copy a wheel ships inside the package
(`moelab/_data/`: the corpus and every embedded model's final weights), else
the source checkout's `data/`.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

DOC_SEP = "\n\n<|endofdoc|>\n\n"
SPLITS = ("train", "heldout")


DATA_ENV = "MOELAB_DATA"


def packaged_data_dir() -> Path:
    """Where a wheel install keeps its data: `moelab/_data/` (absent in a source checkout)."""
    return Path(__file__).resolve().parent / "_data"


def checkout_data_dir() -> Path:
    """The source checkout's `data/` folder (absent in a wheel install)."""
    return Path(__file__).resolve().parents[1] / "data"


def data_dir() -> Path:
    """`$MOELAB_DATA`, else the wheel's `moelab/_data/`, else the checkout's `data/` (see the module docstring)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    packaged = packaged_data_dir()
    return packaged if packaged.is_dir() else checkout_data_dir()


def data_dirs_searched() -> str:
    """Where `data_dir()` looks, for error messages."""
    env = os.environ.get(DATA_ENV)
    return (f"${DATA_ENV}={env}" if env else
            f"{packaged_data_dir()} (a wheel install), then {checkout_data_dir()} (a source checkout); "
            f"set {DATA_ENV} to a folder holding corpus/ and models/")


def corpus_dir() -> Path:
    return data_dir() / "corpus"


def domains() -> list[str]:
    d = corpus_dir()
    if not d.is_dir():
        raise FileNotFoundError(f"no corpus at {d}; looked in {data_dirs_searched()}, or rebuild it with "
                                "scripts/build_corpus.py")
    return sorted(p.name for p in d.iterdir() if (p / "train.txt").is_file())


def load_documents(split: str = "train", domains: list[str] | None = None) -> dict[str, list[str]]:
    """{domain: [document, ...]} for one split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    available = globals()["domains"]()
    wanted = available if domains is None else list(domains)
    unknown = sorted(set(wanted) - set(available))
    if unknown:
        raise ValueError(f"unknown domains {unknown}; available: {available}")
    out = {}
    for d in wanted:
        text = (corpus_dir() / d / f"{split}.txt").read_text(encoding="utf-8")
        out[d] = [doc for doc in text.split(DOC_SEP) if doc.strip()]
    return out


def load_corpus(split: str = "train", domains: list[str] | None = None) -> dict[str, str]:
    """{domain: text} for one split ("train" or "heldout"); documents joined by blank lines."""
    return {d: "\n\n".join(docs) for d, docs in load_documents(split, domains).items()}


# --------------------------------------------------------------------------- tokenizer
def mixtral_tokenizer_path() -> Path:
    import mistral_common

    p = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    if not p.is_file():
        raise FileNotFoundError(f"{p} not found: install mistral-common (pip install mistral-common)")
    return p


class MixtralTokenizer:
    """SentencePiece with the transformers calling convention.

    `tok(text)` / `tok([texts], return_tensors="pt", padding=True)` give
    `input_ids` and `attention_mask`; `decode`, `batch_decode`,
    `convert_ids_to_tokens` as in transformers. Mixtral has no pad token;
    `pad_token_id` is `<unk>` (0), masked out by `attention_mask`.
    """

    def __init__(self, model_file: str | os.PathLike | None = None, *, padding_side: str = "left"):
        import sentencepiece as spm

        self.model_file = str(model_file or mixtral_tokenizer_path())
        self.sp = spm.SentencePieceProcessor(model_file=self.model_file)
        self.bos_token_id = self.sp.bos_id()      # 1, "<s>"
        self.eos_token_id = self.sp.eos_id()      # 2, "</s>"
        self.unk_token_id = self.sp.unk_id()      # 0, "<unk>"
        self.pad_token_id = self.unk_token_id
        self.padding_side = padding_side
        self.name_or_path = "mistral-common:tokenizer.model.v1"

    @property
    def vocab_size(self) -> int:
        return self.sp.get_piece_size()

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def all_special_ids(self) -> list[int]:
        return [self.unk_token_id, self.bos_token_id, self.eos_token_id]

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.sp.encode(text)
        return [self.bos_token_id, *ids] if add_special_tokens else ids

    def __call__(self, text, *, add_special_tokens=True, padding=False, truncation=False, max_length=None,
                 return_tensors=None, padding_side=None):
        single = isinstance(text, str)
        if not single and not (isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text)):
            raise TypeError(f"tokenizer expects a str or a list of str; got {type(text).__name__}")
        if not single and len(text) == 0:
            raise ValueError("tokenizer got an empty list of texts; pass at least one string")
        seqs = [self.encode(t, add_special_tokens) for t in ([text] if single else text)]
        if truncation and max_length:
            seqs = [s[:max_length] for s in seqs]
        side = padding_side or self.padding_side
        lengths = {len(s) for s in seqs}
        if padding or (return_tensors and len(lengths) > 1):
            if not padding:
                raise ValueError("texts have different lengths; pass padding=True to batch them into one tensor")
            width = max(lengths) if padding in (True, "longest") else int(max_length)
            pad = [[self.pad_token_id] * (width - len(s)) for s in seqs]
            masks = [[0] * len(p) + [1] * len(s) if side == "left" else [1] * len(s) + [0] * len(p)
                     for p, s in zip(pad, seqs)]
            seqs = [p + s if side == "left" else s + p for p, s in zip(pad, seqs)]
        else:
            masks = [[1] * len(s) for s in seqs]
        out = {"input_ids": seqs, "attention_mask": masks}
        if return_tensors == "pt":
            import torch

            out = {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        elif return_tensors == "np":
            import numpy as np

            out = {k: np.asarray(v, dtype=np.int64) for k, v in out.items()}
        elif return_tensors is not None:
            raise ValueError(f"return_tensors must be None, 'pt' or 'np'; got {return_tensors!r}")
        elif single:
            out = {k: v[0] for k, v in out.items()}
        return _BatchEncoding(out)

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.all_special_ids]
        return self.sp.decode(ids)

    def batch_decode(self, batch, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def convert_ids_to_tokens(self, ids):
        if isinstance(ids, int):
            return self.sp.id_to_piece(ids)
        return [self.sp.id_to_piece(int(i)) for i in ids]

    def tokenize(self, text: str) -> list[str]:
        return self.sp.encode(text, out_type=str)

    def token_strings(self, ids) -> list[str]:
        """Readable text of each id (SentencePiece's '▁' shown as a space), for coloured-token figures."""
        return [p.replace("\u2581", " ") for p in self.convert_ids_to_tokens(ids)]

    def __repr__(self) -> str:
        return f"MixtralTokenizer(vocab_size={self.vocab_size}, file={self.model_file!r})"


class _BatchEncoding(dict):
    """A dict that also allows attribute access (`enc.input_ids`) and `.to(device)`, like transformers'."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device):
        return _BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


@lru_cache(maxsize=None)
def load_tokenizer() -> MixtralTokenizer:
    """Mixtral 8x7B's tokenizer, from the installed mistral-common package (offline)."""
    return MixtralTokenizer()
