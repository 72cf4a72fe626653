"""course_lib.tokenize: special tokens, round trips, padding, BPE trained offline."""
import pytest
import torch

from course_lib.masks import padding_mask
from course_lib.tokenize import (
    BOS_ID, EOS_ID, PAD_ID, SPECIAL_TOKENS, UNK_ID, CharTokenizer, WordTokenizer, load_corpus, pad_batch, train_bpe,
)

Q, A = "中国的首都是哪里?", "北京"


def test_special_token_ids():
    assert SPECIAL_TOKENS == ("<pad>", "<bos>", "<eos>", "<unk>")
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    tok = CharTokenizer.from_texts(["ab"])
    assert tok.vocab[:4] == list(SPECIAL_TOKENS) and len(tok) == 6


def test_char_round_trip_chinese():
    tok = CharTokenizer.from_texts([Q, A])
    ids = tok.encode(A, add_bos=True, add_eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and len(ids) == 4
    assert tok.decode(ids) == A
    assert tok.decode(tok.encode(Q)) == Q
    assert tok.decode(ids, skip_special=False) == "<bos>北京<eos>"
    assert tok.vocab[4:] == sorted(set(Q + A))


def test_char_unknown_and_empty():
    tok = CharTokenizer.from_texts([Q])
    assert tok.encode("北京") == [UNK_ID, UNK_ID]
    assert tok.encode("", add_bos=True, add_eos=True) == [BOS_ID, EOS_ID]
    assert tok.decode([]) == ""
    with pytest.raises(ValueError, match=r"\[0, 13\)"):
        tok.decode([13])


def test_word_tokenizer_i_saw_a_saw():
    tok = WordTokenizer.from_texts(["I saw a saw."])
    ids = tok.encode("I saw a saw.")
    assert len(ids) == 5 and ids[1] == ids[3]  # the same word gets the same id
    assert tok.decode(ids) == "I saw a saw ."
    assert tok.vocab[4] == "saw"  # most frequent first
    small = WordTokenizer.from_texts(["a a a b b c"], max_size=6)
    assert small.vocab == [*SPECIAL_TOKENS, "a", "b"] and small.encode("c") == [UNK_ID]


def test_pad_batch_and_mask():
    tok = CharTokenizer.from_texts([Q, A])
    ids = tok.encode_batch([Q, A], add_bos=True, add_eos=True)
    assert ids.shape == (2, 11) and ids.dtype == torch.long
    assert (ids[1, 4:] == PAD_ID).all() and ids[1, 3] == EOS_ID
    m = padding_mask(ids, PAD_ID)
    assert m.shape == (2, 1, 1, 11)
    assert m[0].all() and m[1, 0, 0].tolist() == [True] * 4 + [False] * 7
    assert pad_batch([[5, 6]]).tolist() == [[5, 6]]
    assert pad_batch([[1, 2], [3, 4]], pad_id=9).tolist() == [[1, 2], [3, 4]]
    assert pad_batch([[], [7]], pad_id=9).tolist() == [[9], [7]]
    assert pad_batch([[], []]).shape == (2, 0)
    with pytest.raises(ValueError, match="at least one"):
        pad_batch([])


def test_corpus_is_shipped():
    lines = load_corpus()
    assert len(lines) == 796 and all(lines)
    with pytest.raises(ValueError, match="python_reference"):
        load_corpus("nope")


def test_bpe_round_trip_and_more_merges_shorten_sequences():
    corpus = load_corpus()[:200]
    small, big = train_bpe(corpus, 300), train_bpe(corpus, 1000)
    assert small.get_vocab_size() == 300 and big.get_vocab_size() == 1000
    for tok in (small, big):
        assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    text = "Names refer to objects. " + Q  # Chinese is unseen: byte-level BPE still encodes it, no UNK
    for tok in (small, big):
        assert tok.decode(tok.encode(text).ids) == text
    assert len(big.encode(text).ids) < len(small.encode(text).ids)
    assert train_bpe(corpus, 500).get_vocab() == train_bpe(corpus, 500).get_vocab()  # deterministic
    with pytest.raises(ValueError, match="260"):
        train_bpe(corpus, 100)
