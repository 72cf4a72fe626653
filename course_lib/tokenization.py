"""Tokenizers: from text to token ids and back (characters, words, BPE subwords), and padded batches.

Explained in chapter 01 (sequences in, sequences out). Byte-pair encoding (BPE):
Sennrich, Haddow and Birch, "Neural Machine Translation of Rare Words with Subword
Units", 2016; the byte-level variant is the one GPT-2 uses (Radford et al., 2019).
Word splitting follows BERT's basic tokenizer (Devlin et al., 2019; transformers'
``BasicTokenizer`` with ``do_lower_case=False``): every CJK character is a word of its
own and every punctuation mark is split off, in every script.

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

A tokenizer has ``encode(text, add_bos=False, add_eos=False) -> list[int]`` and
``decode(ids, skip_special=True, stop_at_eos=False) -> str``; a batch of token-id lists
of different lengths becomes one ``(B, S)`` tensor with :func:`pad_batch` (right or left
padding), and ``course_lib.masks.padding_mask(ids, PAD_ID)`` says which positions are real.

(The module is called ``tokenization``, not ``tokenize``: a file ``tokenize.py`` would hide
Python's own ``tokenize`` module from any script run inside ``course_lib/``.)
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import unicodedata
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

    Attributes:
        vocab: ``list[str]``, id -> piece; the four special tokens first.
        stoi: ``dict[str, int]``, piece -> id.
    """

    def __init__(self, pieces: Iterable[str]):
        pieces = [p for p in dict.fromkeys(pieces) if p not in SPECIAL_TOKENS]
        self._check_pieces(pieces)
        self.vocab: list[str] = list(SPECIAL_TOKENS) + pieces  # id -> piece
        self.stoi: dict[str, int] = {p: i for i, p in enumerate(self.vocab)}  # piece -> id

    # ids of the special tokens (the same in every vocabulary)
    pad_id, bos_id, eos_id, unk_id = PAD_ID, BOS_ID, EOS_ID, UNK_ID

    def _check_pieces(self, pieces: list[str]) -> None:
        """Subclasses refuse pieces their :meth:`split` can never produce."""

    def __len__(self) -> int:
        """The vocabulary size ``V`` (special tokens included)."""
        return len(self.vocab)

    def __repr__(self) -> str:
        shown = self.join(self.vocab[len(SPECIAL_TOKENS):len(SPECIAL_TOKENS) + 40])
        more = "..." if len(self) > len(SPECIAL_TOKENS) + 40 else ""
        return f"{type(self).__name__}(V={len(self)}, specials={list(SPECIAL_TOKENS)}, pieces={shown!r}{more})"

    @abstractmethod
    def split(self, text: str) -> list[str]:
        """Text to pieces (characters, words, ...)."""

    @abstractmethod
    def join(self, pieces: list[str]) -> str:
        """Pieces back to text."""

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        """Text to token ids; a piece missing from the vocabulary becomes ``UNK_ID``.

        Args:
            text: the text to encode.
            add_bos: start with ``BOS_ID`` (the decoder input of teacher forcing starts so).
            add_eos: end with ``EOS_ID`` (the labels end so).

        Returns:
            a list of ``len(split(text)) + add_bos + add_eos`` ids.

        Equivalent to::

            [BOS_ID] * add_bos + [stoi.get(p, UNK_ID) for p in split(text)] + [EOS_ID] * add_eos
        """
        ids = [self.stoi.get(p, UNK_ID) for p in self.split(text)]
        return [BOS_ID] * add_bos + ids + [EOS_ID] * add_eos

    def _check_ids(self, ids: Iterable[int] | torch.Tensor) -> list[int]:
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode: expected a 1-D sequence of ids (S,), received shape {tuple(ids.shape)}")
            ids = ids.tolist()
        ids = [int(i) for i in ids]
        for i in ids:
            if not 0 <= i < len(self.vocab):
                raise ValueError(f"decode: expected ids in [0, {len(self.vocab)}) (V = {len(self.vocab)}), received {i}")
        return ids

    def decode(self, ids: Iterable[int] | torch.Tensor, skip_special: bool = True, stop_at_eos: bool = False) -> str:
        """Token ids to text.

        Args:
            ids: a list of ids or a 1-D tensor ``(S,)``.
            skip_special: drop the four special tokens (``<pad> <bos> <eos> <unk>``, as
                transformers' ``skip_special_tokens=True``); False writes them out.
            stop_at_eos: ignore everything after the first ``EOS_ID`` (what a generated
                sequence needs: the model may write anything after it). The EOS itself is
                written only when ``skip_special=False``.

        Returns:
            the text; ``decode(encode(text)) == text`` for a :class:`CharTokenizer` and known characters.

        Raises:
            ValueError: an id outside ``[0, V)``, or a tensor that is not 1-D.

        Equivalent to::

            if stop_at_eos and EOS_ID in ids: ids = ids[:ids.index(EOS_ID) + 1]
            join([vocab[i] for i in ids if not (skip_special and i < 4)])
        """
        pieces = []
        for i in self._check_ids(ids):
            if not (skip_special and i < len(SPECIAL_TOKENS)):
                pieces.append(self.vocab[i])
            if stop_at_eos and i == EOS_ID:
                break
        return self.join(pieces)

    def convert_ids_to_tokens(self, ids: Iterable[int] | torch.Tensor) -> list[str]:
        """The piece of each id, special tokens included (for printing a batch); transformers' name.

        Raises:
            ValueError: an id outside ``[0, V)``, or a tensor that is not 1-D.
        """
        return [self.vocab[i] for i in self._check_ids(ids)]

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False, add_eos: bool = False,
                     side: str = "right") -> torch.Tensor:
        """Encode several texts and pad them to one ``(B, S)`` tensor with ``PAD_ID`` (see :func:`pad_batch`)."""
        return pad_batch([self.encode(t, add_bos, add_eos) for t in texts], PAD_ID, side=side)


class CharTokenizer(_TableTokenizer):
    """One token per character (Unicode code point), plus the four special tokens.

    Decoding is exact: ``decode(encode(text)) == text`` for every text made of known characters.

    Args:
        chars: the characters of the vocabulary (single characters); duplicates are dropped,
            order is kept. :meth:`from_texts` and :meth:`from_examples` collect them sorted by
            code point, so the same characters always give the same ids.

    Raises:
        ValueError: an entry of ``chars`` that is not a single character.

    Example::

        tok = CharTokenizer.from_texts(["中国的首都是哪里?", "北京"])
        tok.encode("北京", add_bos=True, add_eos=True)   # [1, id(北), id(京), 2]
        tok.decode([1, 5, 6, 2, 0])                     # "北京" (special tokens skipped)
        tok.decode([5, 2, 6], stop_at_eos=True)         # the character of id 5 only
    """

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        """Vocabulary = the special tokens, then every character seen, sorted by code point."""
        return cls(sorted({c for t in texts for c in t}))

    @classmethod
    def from_examples(cls, examples: Iterable[dict]) -> "CharTokenizer":
        """The vocabulary of the sources and targets of ``examples``.

        Args:
            examples: dicts with string fields ``"src"`` and ``"tgt"`` (a list from
                ``course_lib.tasks``, or a ``datasets.Dataset`` with those columns).
        """
        return cls.from_texts(t for ex in examples for t in (ex["src"], ex["tgt"]))

    def _check_pieces(self, pieces: list[str]) -> None:
        for c in pieces:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer: expected single characters, received {c!r}")

    def split(self, text: str) -> list[str]:
        return list(text)

    def join(self, pieces: list[str]) -> str:
        return "".join(pieces)


# --- Word splitting: BERT's basic tokenizer (do_lower_case=False) ----------------------------------

def _is_cjk(cp: int) -> bool:
    """A CJK Unified Ideograph (the code-point blocks of BERT's ``_is_chinese_char``).

    Hangul, Hiragana and Katakana are not in these blocks: those scripts separate words
    with spaces and are split like any other.
    """
    return (
        0x4E00 <= cp <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= cp <= 0x4DBF  # Extension A
        or 0x20000 <= cp <= 0x2A6DF  # Extension B
        or 0x2A700 <= cp <= 0x2B73F  # Extension C
        or 0x2B740 <= cp <= 0x2B81F  # Extension D
        or 0x2B820 <= cp <= 0x2CEAF  # Extension E
        or 0xF900 <= cp <= 0xFAFF  # Compatibility Ideographs
        or 0x2F800 <= cp <= 0x2FA1F  # Compatibility Ideographs Supplement
    )


def _is_punctuation(ch: str) -> bool:
    """Unicode punctuation (category P*: 。 ， ¿ « » ...) or any ASCII symbol (``$ + < = > ^ ` | ~`` too)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_whitespace(ch: str) -> bool:
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch: str) -> bool:
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _split_words(text: str) -> list[str]:
    """Words, CJK characters and punctuation marks, as BERT's ``BasicTokenizer(do_lower_case=False)``.

    Steps: drop control characters (and NUL, U+FFFD); surround every CJK character with
    spaces; normalise to NFC; split on white space; split each punctuation mark off.
    """
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or _is_control(ch):
            continue
        if _is_whitespace(ch):
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")  # every CJK character is a word of its own
        else:
            chars.append(ch)
    words = []
    for chunk in unicodedata.normalize("NFC", "".join(chars)).split():
        word = ""
        for ch in chunk:
            if _is_punctuation(ch):
                if word:
                    words.append(word)
                words.append(ch)
                word = ""
            else:
                word += ch
        if word:
            words.append(word)
    return words


class WordTokenizer(_TableTokenizer):
    """One token per word, CJK character or punctuation mark, plus the four special tokens.

    Splitting is BERT's basic tokenizer without lower-casing (transformers'
    ``BasicTokenizer(do_lower_case=False)``, tested equal): text is split on white space,
    every punctuation mark becomes a token of its own in every script (``。`` ``？`` ``¿``
    ``_`` ...), and every CJK ideograph is one token, since Chinese writes no spaces between
    words: ``"北京是中国的首都。"`` gives ``北 京 是 中 国 的 首 都 。``. Symbols that are not
    punctuation (``€``, ``°``) stay attached to their word, as in BERT.

    Decoding joins the pieces with single spaces, so it loses the original spacing:
    ``decode(encode("I saw a saw."))`` gives ``"I saw a saw ."``, Chinese comes back as ``"北 京"``.

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
        counts = Counter(w for t in texts for w in _split_words(t))
        words = [w for w, _ in counts.most_common()]
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIAL_TOKENS))]
        return cls(words)

    def split(self, text: str) -> list[str]:
        return _split_words(text)

    def join(self, pieces: list[str]) -> str:
        return " ".join(pieces)


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int = PAD_ID, side: str = "right",
              length: int | None = None) -> torch.Tensor:
    """Stack token-id lists of different lengths into one tensor, filling with ``pad_id``.

    Args:
        sequences: ``B`` lists (or 1-D tensors) of token ids; lengths may differ, may be 0.
        pad_id: the id written where a sequence is shorter.
        side: ``"right"`` (pads after the tokens: encoders, training) or ``"left"`` (pads
            before: batched generation, so that every row's last token is at the end).
        length: the padded length ``S``; default the longest sequence.

    Shape:
        returns ``(B, S)``, ``torch.long``.

    Raises:
        ValueError: no sequence (``B = 0``), ``side`` not ``"left"``/``"right"``, or
            ``length`` shorter than the longest sequence.

    Equivalent to::

        S = max(len(s) for s in sequences) if length is None else length
        torch.tensor([list(s) + [pad_id] * (S - len(s)) for s in sequences])   # side="right"
        torch.tensor([[pad_id] * (S - len(s)) + list(s) for s in sequences])   # side="left"
    """
    if len(sequences) == 0:
        raise ValueError("pad_batch: expected at least one sequence (B >= 1), received none")
    if side not in ("left", "right"):
        raise ValueError(f"pad_batch: expected side 'left' or 'right', received {side!r}")
    longest = max(len(s) for s in sequences)
    S = longest if length is None else length
    if S < longest:
        raise ValueError(
            f"pad_batch: expected length >= {longest} (the longest sequence), received length={S}, which is shorter"
        )
    out = torch.full((len(sequences), S), pad_id, dtype=torch.long)  # (B, S)
    for b, s in enumerate(sequences):
        if len(s):
            row = torch.as_tensor(list(s) if not isinstance(s, torch.Tensor) else s, dtype=torch.long)
            if side == "right":
                out[b, : len(s)] = row
            else:
                out[b, S - len(s):] = row
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
