"""course_lib.tasks: generated seq2seq tasks and padded batches (the tokenizer comes from course_lib.tokenization)."""
import datetime
import importlib.util

import pytest
import torch

import course_lib.tasks as tasks
from course_lib.tasks import (
    CAPITALS, capitals_examples, copy_examples, date_examples,
    make_batch, make_dataset, make_examples, iterate_batches, reverse_examples, sort_examples,
)
from course_lib.tasks import DATE_FORMATS, _format_date_builtin
from course_lib.tokenization import BOS_ID, EOS_ID, PAD_ID, UNK_ID, CharTokenizer, WordTokenizer, pad_batch


def test_special_ids_and_round_trip():
    """What tasks.CharVocab did, with the one character tokenizer (add_bos/add_eos, stop_at_eos, skip_special)."""
    vocab = CharTokenizer.from_texts(["中国的首都是哪里?", "北京"])
    assert vocab.vocab[:4] == ["<pad>", "<bos>", "<eos>", "<unk>"]
    assert (PAD_ID, BOS_ID, EOS_ID, UNK_ID) == (0, 1, 2, 3)
    ids = vocab.encode("北京", add_bos=True, add_eos=True)
    assert ids[0] == BOS_ID and ids[-1] == EOS_ID and len(ids) == 4
    assert vocab.decode(ids + [PAD_ID, PAD_ID], stop_at_eos=True) == "北京"
    assert vocab.decode(torch.tensor(ids), stop_at_eos=True) == "北京"
    assert vocab.decode([vocab.stoi["北"], EOS_ID, vocab.stoi["京"]], stop_at_eos=True) == "北"  # stops at EOS
    assert vocab.encode("上海") == [UNK_ID, UNK_ID]
    assert vocab.decode(ids, skip_special=False) == "<bos>北京<eos>"
    # ids do not depend on the order the characters were seen in
    assert CharTokenizer.from_texts(["北京", "中国的首都是哪里?"]).vocab == vocab.vocab
    with pytest.raises(ValueError, match="single characters"):
        CharTokenizer(["ab"])


def test_tasks_keeps_only_tasks_and_batching():
    """One name per concept: the tokenizer, the special ids and the padding live in course_lib.tokenization."""
    for gone in ("CharVocab", "pad_sequences", "SPECIALS", "PAD", "BOS", "EOS", "UNK",
                 "PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID"):
        assert not hasattr(tasks, gone), gone
    assert set(tasks.__all__) == {
        "copy_examples", "reverse_examples", "sort_examples", "date_examples", "capitals_examples",
        "CAPITALS", "CAPITAL_TEMPLATES", "DATE_FORMATS", "TASKS", "make_examples", "make_dataset",
        "Seq2SeqBatch", "make_batch", "iterate_batches",
    }


@pytest.mark.parametrize("make, rule", [
    (copy_examples, lambda s: s), (reverse_examples, lambda s: s[::-1]), (sort_examples, lambda s: "".join(sorted(s))),
])
def test_string_tasks(make, rule):
    examples = make(200, min_len=2, max_len=5, seed=3)
    assert len(examples) == 200
    assert all(2 <= len(e["src"]) <= 5 and e["tgt"] == rule(e["src"]) for e in examples)
    assert set("".join(e["src"] for e in examples)) <= set("abcdefghij")
    assert make(200, min_len=2, max_len=5, seed=3) == examples  # seeded
    assert make(200, min_len=2, max_len=5, seed=4) != examples
    with pytest.raises(ValueError, match="min_len"):
        make(3, min_len=4, max_len=2)


def test_dates_targets_are_iso_and_sources_vary():
    examples = date_examples(300, seed=0)
    for e in examples:
        d = datetime.date.fromisoformat(e["tgt"])
        assert 1950 <= d.year < 2050
        assert str(d.day) in e["src"]
    sources = " ".join(e["src"] for e in examples)
    assert "年" in sources and "/" in sources and "," in sources and "星期" in sources
    assert date_examples(300, seed=0) == examples


@pytest.mark.skipif(importlib.util.find_spec("babel") is None, reason="needs babel to compare with")
def test_builtin_date_writer_matches_babel():
    """Without babel, the module writes exactly what babel (CLDR) writes: the data do not depend on it."""
    from babel.dates import format_date

    d = datetime.date(1950, 1, 1)
    while d.year < 2050:
        for locale, fmt in DATE_FORMATS:
            assert _format_date_builtin(d, locale, fmt) == format_date(d, format=fmt, locale=locale)
        d += datetime.timedelta(days=97)
    assert date_examples(50, seed=1, use_babel=True) == date_examples(50, seed=1, use_babel=False)


def test_capitals_contains_the_source_example():
    examples = capitals_examples()
    assert {"src": "中国的首都是哪里?", "tgt": "北京"} in examples
    assert len(examples) == len(CAPITALS) >= 30
    assert len({c[0] for c in CAPITALS}) == len(CAPITALS)  # no country twice
    assert len(capitals_examples(templates=("{}的首都是哪里?", "{}的首都是什么?"))) == 2 * len(CAPITALS)
    assert {"src": "What is the capital of China?", "tgt": "Beijing"} in capitals_examples(english=True)


def test_pad_batch_replaces_pad_sequences():
    """tasks.pad_sequences is now tokenization.pad_batch (same arguments: pad_id, side, length)."""
    seqs = [[5, 6, 7], [8], []]
    right = pad_batch(seqs)
    left = pad_batch(seqs, side="left", length=4)
    assert torch.equal(right, torch.tensor([[5, 6, 7], [8, 0, 0], [0, 0, 0]]))
    assert torch.equal(left, torch.tensor([[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match="shorter"):
        pad_batch(seqs, length=2)
    with pytest.raises(ValueError, match="side"):
        pad_batch(seqs, side="middle")


def test_make_batch_teacher_forcing_layout():
    examples = [{"src": "abc", "tgt": "cba"}, {"src": "d", "tgt": "d"}]
    vocab = CharTokenizer.from_examples(examples)
    batch = make_batch(examples, vocab)
    a, b, c, d = (vocab.stoi[x] for x in "abcd")
    assert torch.equal(batch.src, torch.tensor([[a, b, c], [d, PAD_ID, PAD_ID]]))
    assert torch.equal(batch.tgt_in, torch.tensor([[BOS_ID, c, b, a], [BOS_ID, d, PAD_ID, PAD_ID]]))
    assert torch.equal(batch.tgt_out, torch.tensor([[c, b, a, EOS_ID], [d, EOS_ID, PAD_ID, PAD_ID]]))
    # the decoder input is the label shifted right by one, behind BOS
    assert torch.equal(batch.tgt_in[:, 1:], torch.where(batch.tgt_out[:, :-1] == EOS_ID, PAD_ID, batch.tgt_out[:, :-1]))
    left = make_batch(examples, vocab, src_side="left", tgt_side="left", src_eos=True)
    assert torch.equal(left.src[1], torch.tensor([PAD_ID, PAD_ID, d, EOS_ID]))
    assert torch.equal(left.tgt_in[1], torch.tensor([PAD_ID, PAD_ID, BOS_ID, d]))
    assert batch.src_text == ("abc", "d") and batch.tgt_text == ("cba", "d")
    # any course tokenizer works, a word tokenizer too
    words = [{"src": "北京是首都。", "tgt": "北京"}]
    wb = make_batch(words, WordTokenizer.from_texts(["北京是首都。"]))
    assert wb.src.shape == (1, 6) and wb.tgt_in.shape == wb.tgt_out.shape == (1, 3)


def test_datasets_offline_and_batches(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    ds = make_dataset("reverse", n=50, seed=0)
    assert ds.column_names == ["src", "tgt"] and len(ds) == 50
    assert ds[0] == reverse_examples(50, seed=0)[0]
    split = ds.train_test_split(test_size=0.2, seed=0)
    assert len(split["train"]) == 40 and len(split["test"]) == 10
    assert make_dataset("capitals")[0] == capitals_examples()[0]
    vocab = CharTokenizer.from_examples(ds)
    batches = list(iterate_batches(ds, vocab, batch_size=16, seed=1))
    assert [b.src.shape[0] for b in batches] == [16, 16, 16, 2]
    assert sorted(t for b in batches for t in b.src_text) == sorted(ds["src"])
    # a list gives the same batches as the Dataset, and the seed fixes the order
    as_list = list(iterate_batches(list(ds), vocab, batch_size=16, seed=1))
    assert all(torch.equal(x.tgt_out, y.tgt_out) for x, y in zip(batches, as_list))
    assert len(list(iterate_batches(ds, vocab, batch_size=16, drop_last=True))) == 3
    with pytest.raises(ValueError, match="task"):
        make_examples("translate", 3)
    with pytest.raises(ValueError, match="needs the number"):
        make_examples("copy")
