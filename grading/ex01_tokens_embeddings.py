"""Trusted grading spec for ex01 (tokens, embeddings, a padded batch): probes compute an answer's outputs on fixed inputs.

Each probe mirrors the visible and hidden tests of the graded cell it is named after (unknown characters, empty
strings, a batch of one, sequences of equal length, Chinese text). The grader runs it on the student's namespace
inside the sandbox and on the solution's namespace outside, and compares the outputs. Inputs that are not the
function under test (a vocabulary, token ids) are written out literally, so that one wrong answer does not cost
the points of another.
"""
import torch

ANSWERS = ["build_vocab", "encode", "decode", "one_hot", "embedding_one_hot", "pad_batch", "padding_mask"]
# The answers are called one_hot and embedding_one_hot, as in course_lib.embedding. The grader counts a bare name the
# notebook defines itself (def/class) as its own, so F.one_hot and any import of it stay forbidden while the answer may
# call its own one_hot; torch._C (the kernels underneath) is forbidden too.
FORBIDDEN = ["one_hot", "_C", "embedding", "Embedding", "index_select", "gather", "take", "pad_sequence",
             "one_hot_spec", "embedding_one_hot_spec", "pad_batch_spec", "course_lib"]
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}

QA_VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", "?", "中", "京", "北", "哪", "国", "是", "的", "都", "里", "首"]
EN_VOCAB = ["<pad>", "<bos>", "<eos>", "<unk>", " ", ".", "I", "a", "s", "w"]


def _stoi(vocab):
    return {p: i for i, p in enumerate(vocab)}


def _list(x):
    return list(x) if isinstance(x, (list, tuple)) else x


def probe_test_build_vocab(ns):
    bv = ns["build_vocab"]
    return {
        "question_answer": _list(bv(["北京", "中国的首都是哪里?"])),
        "repeats": _list(bv(["banana", "band"])),
        "no_text": _list(bv([])),
        "empty_strings": _list(bv(["", ""])),
        "english_and_chinese": _list(bv(["I saw a saw.", "北京"])),
    }


def probe_test_encode(ns):
    enc, stoi = ns["encode"], _stoi(QA_VOCAB)
    return {
        "answer": _list(enc("北京", stoi, add_bos=True, add_eos=True)),
        "question_default": _list(enc("中国的首都是哪里?", stoi)),  # add_bos and add_eos are off by default
        "unknown": _list(enc("上海是首都吗?", stoi, add_bos=True, add_eos=True)),
        "only_unknown": _list(enc("xyz", stoi)),
        "empty": _list(enc("", stoi, add_bos=True, add_eos=True)),
        "empty_default": _list(enc("", stoi)),
        "bos_only": _list(enc("北京", stoi, add_bos=True)),
        "eos_only": _list(enc("北京", stoi, add_eos=True)),
        "both_off": _list(enc("北京", stoi, add_bos=False, add_eos=False)),
        "pad_as_text": _list(enc("<pad>", stoi)),
        "english": _list(enc("I saw a saw.", _stoi(EN_VOCAB), add_bos=True, add_eos=True)),
    }


def probe_test_decode(ns):
    dec = ns["decode"]
    return {
        "answer": dec([1, 7, 6, 2], QA_VOCAB),
        "question": dec([5, 9, 11, 14, 12, 10, 8, 13, 4], QA_VOCAB),
        "padding_after_eos": dec([1, 7, 6, 2, 0, 0, 0], QA_VOCAB),
        "unknown_dropped": dec([1, 3, 3, 10, 14, 12, 3, 4, 2], QA_VOCAB),
        "no_ids": dec([], QA_VOCAB),
        "only_specials": dec([1, 2], QA_VOCAB),
        "spaces": dec([1, 6, 4, 8, 7, 9, 4, 7, 4, 8, 7, 9, 5, 2], EN_VOCAB),
    }


def probe_test_one_hot(ns):
    oh = ns["one_hot"]
    out = {
        "sequence": oh(torch.tensor([1, 7, 6, 2]), 15),
        "batch": oh(torch.tensor([[0, 3, 1], [2, 2, 4]]), 5),
        "batch_float64": oh(torch.tensor([[0, 3, 1], [2, 2, 4]]), 5, dtype=torch.float64),
        "last_id": oh(torch.tensor([4]), 5),
        "scalar": oh(torch.tensor(2), 3),
        "no_ids": oh(torch.zeros(2, 0, dtype=torch.long), 7),
    }
    out["dtype"] = str(out["batch"].dtype)
    out["dtype_float64"] = str(out["batch_float64"].dtype)
    return out


def probe_test_embed(ns):
    emb = ns["embedding_one_hot"]
    g = torch.Generator().manual_seed(21)
    w32 = torch.randn(15, 4, generator=g)
    w64 = torch.randn(9, 5, generator=g, dtype=torch.float64)
    ids = torch.randint(0, 9, (3, 6), generator=g)
    batch = emb(ids, w64)
    with torch.enable_grad():  # probes run under no_grad; the gradient is part of what is checked
        w = w64.clone().requires_grad_(True)
        emb(ids, w).pow(2).sum().backward()
    return {
        "sequence": emb(torch.tensor([1, 7, 6, 2]), w32),
        "batch": batch,
        "dtype": str(batch.dtype),
        "gradient": w.grad,
        "long_batch_of_one": emb(torch.randint(0, 9, (1, 50), generator=g), w64),
    }


def probe_test_pad_batch(ns):
    pb = ns["pad_batch"]
    qa = pb([[1, 5, 9, 11, 14, 12, 10, 8, 13, 4, 2], [1, 7, 6, 2]])
    return {
        "question_answer": qa,
        "dtype": str(qa.dtype),
        "batch_of_one": pb([[1, 7, 6, 2]]),
        "same_lengths": pb([[1, 2, 3], [4, 5, 6]]),
        "empty_and_pad_id": pb([[4], [], [5, 6]], pad_id=9),
        "only_empty": pb([[], []]),
        "tuples": pb([(7, 8), (9,)]),
    }


def probe_test_padding_mask(ns):
    pm = ns["padding_mask"]
    basic = pm(torch.tensor([[1, 5, 9, 2], [1, 7, 2, 0]]), 0)
    return {
        "basic": basic,
        "dtype": str(basic.dtype),
        "batch_of_one_no_padding": pm(torch.tensor([[4, 4, 4]]), 0),
        "question_answer": pm(torch.tensor([[1, 7, 6, 2, 0, 0, 0], [1, 5, 9, 11, 14, 12, 2]]), 0),
        "other_pad_id": pm(torch.tensor([[5, 9, 9], [9, 9, 9]]), pad_id=9),
        "no_positions": pm(torch.zeros(2, 0, dtype=torch.long), 0),
    }


PROBES = {
    "test_build_vocab": probe_test_build_vocab,
    "test_encode": probe_test_encode,
    "test_decode": probe_test_decode,
    "test_one_hot": probe_test_one_hot,
    "test_embed": probe_test_embed,
    "test_pad_batch": probe_test_pad_batch,
    "test_padding_mask": probe_test_padding_mask,
}
