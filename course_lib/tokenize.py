"""Tokenizers: from text to token ids and back (characters, words, BPE subwords).

Explained in chapter 01 (sequences in, sequences out). Byte-pair encoding (BPE):
Sennrich, Haddow and Birch, "Neural Machine Translation of Rare Words with Subword
Units", 2016; the byte-level variant is the one GPT-2 uses (Radford et al., 2019).

Every vocabulary built here starts with the same four special tokens, so their ids
are the same everywhere in the course:

====  =========  ==========================================================
 id    token      meaning
====  =========  ==========================================================
 0     ``<pad>``  padding: fills short sequences up to the batch's length
 1     ``<bos>``  beginning of sequence: the decoder's first input
 2     ``<eos>``  end of sequence: the model says "I am done"
 3     ``<unk>``  unknown: any piece that is not in the vocabulary
====  =========  ==========================================================

A tokenizer has ``encode(text) -> list[int]`` and ``decode(ids) -> str``; a batch of
token-id lists of different lengths becomes one ``(B, S)`` tensor with
:func:`pad_batch`, and ``course_lib.masks.padding_mask(ids, PAD_ID)`` says which
positions are real.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

__all__ = [
    "PAD", "BOS", "EOS", "UNK", "SPECIAL_TOKENS", "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID",
    "CharTokenizer",
    "WordTokenizer",
    "pad_batch",
    "train_bpe",
    "load_corpus",
]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3 in every vocabulary built here
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)

_CORPUS_DIR = Path(__file__).parent / "data" / "corpus"


class _TableTokenizer(ABC):
    """A tokenizer that splits text into pieces and looks each piece up in a table.

    Subclasses say how to split (:meth:`split`) and how to glue pieces back (:meth:`join`).
    """

    def __init__(self, pieces: Iterable[str]):
        pieces = [p for p in dict.fromkeys(pieces) if p not in SPECIAL_TOKENS]
        self.vocab: list[str] = list(SPECIAL_TOKENS) + pieces  # id -> piece
        self.stoi: dict[str, int] = {p: i for i, p in enumerate(self.vocab)}  # piece -> id

    # ids of the special tokens (the same in every vocabulary)
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def __len__(self) -> int:
        """The vocabulary size ``V`` (special tokens included)."""
        return len(self.vocab)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(V={len(self)})"

    @abstractmethod
    def split(self, text: str) -> list[str]:
        """Text to pieces (characters, words, ...)."""

    @abstractmethod
    def join(self, pieces: list[str]) -> str:
        """Pieces back to text."""

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text to token ids; a piece missing from the vocabulary becomes ``UNK_ID``.

        Equivalent to::

            [BOS_ID] * add_bos + [stoi.get(p, UNK_ID) for p in split(text)] + [EOS_ID] * add_eos
        """
        ids = [self.stoi.get(p, UNK_ID) for p in self.split(text)]
        return [BOS_ID] * add_bos + ids + [EOS_ID] * add_eos

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special: bool = True) -> str:
        """Token ids to text. Special tokens are dropped (``skip_special=True``) or written out."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode: expected a 1-D sequence of ids (S,), received shape {tuple(ids.shape)}")
            ids = ids.tolist()
        pieces = []
        for i in ids:
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"decode: expected ids in [0, {len(self.vocab)}), received {i}")
            if skip_special and i < len(SPECIAL_TOKENS):
                continue
            pieces.append(self.vocab[i])
        return self.join(pieces)

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False) -> torch.Tensor:
        """Encode several texts and pad them on the right to one ``(B, S)`` tensor (see :func:`pad_batch`)."""
        return pad_batch([self.encode(t, add_bos, add_eos) for t in texts], PAD_ID)


class CharTokenizer(_TableTokenizer):
    """One token per character (Unicode code point), plus the four special tokens.

    Decoding is exact: ``decode(encode(text)) == text`` for every text made of known characters.

    Args:
        chars: the characters of the vocabulary; duplicates are dropped, order is kept.
            Use :meth:`from_texts` to collect them (sorted) from a corpus.

    Example::

        tok = CharTokenizer.from_texts(["中国的首都是哪里?", "北京"])
        tok.encode("北京", add_bos=True, add_eos=True)   # [1, id(北), id(京), 2]
    """

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Vocabulary = the special tokens, then every character seen, sorted by code point."""
        return cls(sorted({c for t in texts for c in t}))

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, pieces: list[str]) -> str:
        return "".join(pieces)


_WORD_RE = re.compile(r"\w+|[^\w\s]")


class WordTokenizer(_TableTokenizer):
    """One token per word or punctuation mark (``\\w+`` or a single non-space symbol).

    Decoding joins the words with single spaces, so it loses the original spacing:
    ``decode(encode("I saw a saw."))`` gives ``"I saw a saw ."``.

    Args:
        words: the words of the vocabulary, most useful first; :meth:`from_texts` builds it.
    """

    @classmethod
    def from_texts(cls, texts: Iterable[str], max_size: int | None = None) -> "WordTokenizer":
        """Vocabulary = the special tokens, then the words seen, most frequent first (ties: first seen).

        Args:
            max_size: keep at most this many entries in all (special tokens included);
                the rarer words then become ``UNK``.
        """
        counts = Counter(w for t in texts for w in _WORD_RE.findall(t))
        words = [w for w, _ in counts.most_common()]
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(words)

    def split(self, text: str) -> list[str]:
        return _WORD_RE.findall(text)

    def join(self, pieces: list[str]) -> str:
        return " ".join(pieces)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID) -> torch.Tensor:
    """Stack token-id lists of different lengths into one tensor, padding on the right.

    Args:
        sequences: ``B`` lists of token ids (lengths may differ, may be empty).
        pad_id: the id written after each shorter sequence.

    Shape:
        returns ``(B, S)``, ``torch.long``, with ``S`` the longest length.

    Equivalent to::

        S = max(len(s) for s in sequences)
        torch.tensor([list(s) + [pad_id] * (S - len(s)) for s in sequences])
    """
    if len(sequences) == 0:
        raise ValueError("pad_batch: expected at least one sequence (B >= 1), received none")
    S = max(len(s) for s in sequences)
    out = torch.full((len(sequences), S), pad_id, dtype=torch.long)  # (B, S)
    for b, s in enumerate(sequences):
        out[b, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return out


def train_bpe(texts: Iterable[str], vocab_size: int, special_tokens: Sequence[str] = SPECIAL_TOKENS):
    """Train a byte-level BPE tokenizer with the ``tokenizers`` package, offline.

    Byte-level means the starting alphabet is the 256 byte values, so any text, Chinese
    included, can be encoded without ``UNK``: a character missing from the merges falls
    back to its UTF-8 bytes (one to four tokens). Each merge then glues the most frequent
    adjacent pair into a new token, until the vocabulary has ``vocab_size`` entries.

    Args:
        texts: the training corpus (an iterable of strings).
        vocab_size: the final vocabulary size ``V``, at least ``256 + len(special_tokens)``.
        special_tokens: given the first ids (``<pad>`` = 0, ``<bos>`` = 1, ...).

    Returns:
        a ``tokenizers.Tokenizer``: ``tok.encode(text).ids`` and ``tok.decode(ids)``;
        decoding gives back the exact text.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < 256 + len(special_tokens):
        raise ValueError(
            f"train_bpe: expected vocab_size >= {256 + len(special_tokens)} (256 bytes + special tokens), "
            f"received {vocab_size}"
        )
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def load_corpus(name: str = "python_reference") -> list[str]:
    """A small text corpus shipped with the course, one paragraph per line.

    ``"python_reference"``: 796 English paragraphs (172 KB) from the Python Language and
    Library Reference (PSF License; provenance in ``course_lib/data/corpus/NOTICE.txt``).
    """
    path = _CORPUS_DIR / f"{name}.txt"
    if not path.is_file():
        known = sorted(p.stem for p in _CORPUS_DIR.glob("*.txt"))
        raise ValueError(f"load_corpus: unknown corpus {name!r}; expected one of {known}")
    return path.read_text(encoding="utf-8").splitlines()
