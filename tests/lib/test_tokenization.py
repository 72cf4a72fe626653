"""course_lib.tokenization: special tokens, round trips, word splitting as BERT, padding, BPE trained offline."""
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, strategies as st

import course_lib
from course_lib.masks import padding_mask
from course_lib.tokenization import (
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


# --- The module name: course_lib/ on sys.path must not hide the standard library -------------------

LIB_DIR = Path(course_lib.__file__).parent


@pytest.mark.parametrize("how", ["cwd", "sys.path[0]"])
def test_stdlib_tokenize_loads_with_course_lib_on_sys_path(how):
    """course_lib/tokenize.py hid Python's tokenize: `import tokenize` inside course_lib/ failed (linecache needs it)."""
    code = "import tokenize, sys; assert hasattr(tokenize, 'generate_tokens'), tokenize.__file__; print(tokenize.__file__)"
    if how == "cwd":
        cmd, cwd = [sys.executable, "-c", code], LIB_DIR  # python -c puts the current directory first on sys.path
    else:
        cmd, cwd = [sys.executable, "-c", f"import sys; sys.path.insert(0, {str(LIB_DIR)!r}); {code}"], None
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert Path(proc.stdout.strip()).parent != LIB_DIR


def test_no_course_lib_module_shadows_the_standard_library():
    names = {p.stem for p in LIB_DIR.glob("*.py")} | {p.name for p in LIB_DIR.iterdir() if (p / "__init__.py").exists()}
    assert not names & set(sys.stdlib_module_names)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("course_lib.tokenize")


# --- One character tokenizer: what tasks.CharVocab did, with CharTokenizer's argument names -----------

def test_char_tokenizer_from_examples_and_order():
    examples = [{"src": "cab", "tgt": "abc"}, {"src": "中国", "tgt": "北京"}]
    tok = CharTokenizer.from_examples(examples)
    assert tok.vocab == [*SPECIAL_TOKENS, *sorted(set("cab中国北京"))]
    # ids do not depend on the order the characters were seen in
    assert CharTokenizer.from_examples(examples[::-1]).vocab == tok.vocab
    assert CharTokenizer.from_texts(["北京", Q]).vocab == CharTokenizer.from_texts([Q, "北京"]).vocab
    with pytest.raises(ValueError, match="single characters.*'ab'"):
        CharTokenizer(["a", "ab"])


def test_decode_skip_special_and_stop_at_eos():
    """One decode covers both old behaviours: skip specials (tokenize) and stop at EOS (tasks.CharVocab)."""
    tok = CharTokenizer.from_texts([Q, A])
    bei, jing = tok.stoi["北"], tok.stoi["京"]
    generated = [BOS_ID, bei, EOS_ID, jing, PAD_ID]  # a model may write anything after EOS
    assert tok.decode(generated) == "北京"
    assert tok.decode(generated, stop_at_eos=True) == "北"
    assert tok.decode(generated, skip_special=False) == "<bos>北<eos>京<pad>"
    assert tok.decode(generated, skip_special=False, stop_at_eos=True) == "<bos>北<eos>"
    assert tok.decode(torch.tensor(generated), stop_at_eos=True) == "北"
    assert tok.decode([bei, UNK_ID, jing]) == "北京" and tok.decode([bei, UNK_ID], skip_special=False) == "北<unk>"
    assert tok.convert_ids_to_tokens(torch.tensor(generated)) == ["<bos>", "北", "<eos>", "京", "<pad>"]
    with pytest.raises(ValueError, match=r"\[0, 15\).*-1"):
        tok.decode([bei, -1])
    with pytest.raises(ValueError, match=r"1-D.*\(1, 2\)"):
        tok.decode(torch.tensor([[bei, jing]]))
    assert repr(tok).startswith("CharTokenizer(V=15, specials=['<pad>', '<bos>', '<eos>', '<unk>'], pieces='?中京北")


def test_pad_batch_left_right_and_length():
    seqs = [[5, 6, 7], [8], []]
    right = pad_batch(seqs)
    left = pad_batch(seqs, side="left", length=4)
    assert torch.equal(right, torch.tensor([[5, 6, 7], [8, 0, 0], [0, 0, 0]]))
    assert torch.equal(left, torch.tensor([[0, 5, 6, 7], [0, 0, 0, 8], [0, 0, 0, 0]]))
    assert torch.equal(pad_batch([torch.tensor([5, 6]), torch.tensor([7])], pad_id=9, side="left"),
                       torch.tensor([[5, 6], [9, 7]]))
    with pytest.raises(ValueError, match="shorter"):
        pad_batch(seqs, length=2)
    with pytest.raises(ValueError, match="side"):
        pad_batch(seqs, side="middle")
    tok = CharTokenizer.from_texts([Q, A])
    batch = tok.encode_batch([Q, A], add_bos=True, side="left")
    assert batch[1].tolist() == [PAD_ID] * 7 + tok.encode(A, add_bos=True)


# --- Word splitting: CJK characters one token each, punctuation split off in every script ------------

MIXED = [
    "中国的首都是北京。",
    "Hello, world! 北京是中国的首都。What's the capital of 日本? 东京…",
    "「東京」は日本の首都です。韓国の首都は서울입니다!",
    "¿Dónde está Madrid? «Paris», l'Élysée; foo_bar(x=1) -> 3.14 $5 €5 50°",
    "हिन्दी भाषा। Привет, мир! مرحبا، عالم؟ 𠀀𠀁 (Ext. B) ｅｘａｍｐｌｅ，全角！",
    "tab\there\nnew line\u3000ideographic space\u00a0nbsp\x00nul\x07bell\ufffdreplacement",
    "e\u0301 composed: NFC",
]


def _bert_basic_tokenizers():
    """BERT's basic tokenizer (do_lower_case=False), slow and fast, as importable offline."""
    found = {}
    for module in ("transformers.models.bert.tokenization_bert", "transformers.models.prophetnet.tokenization_prophetnet",
                   "transformers.models.tapas.tokenization_tapas"):  # the last two hold copies of BERT's
        try:
            basic = importlib.import_module(module).BasicTokenizer(do_lower_case=False)
        except (ImportError, AttributeError):
            continue
        found["slow"] = basic.tokenize
        break
    try:
        from tokenizers import normalizers, pre_tokenizers
    except ImportError:
        pass
    else:  # what transformers' BertTokenizer (fast) runs before WordPiece; the slow one also normalises to NFC
        norm = normalizers.Sequence([normalizers.NFC(), normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=False, lowercase=False)])
        pre = pre_tokenizers.BertPreTokenizer()
        found["fast"] = lambda text: [w for w, _ in pre.pre_tokenize_str(norm.normalize_str(text))]
    return found


BERT = _bert_basic_tokenizers()


def test_word_tokenizer_chinese_issue_case():
    """A whole Chinese clause was one word: encode("中国的首都是北京。") gave [<unk>, 。]."""
    tok = WordTokenizer.from_texts(["中国的首都是哪里?", "北京是中国的首都。"])
    assert tok.split("中国的首都是北京。") == ["中", "国", "的", "首", "都", "是", "北", "京", "。"]
    ids = tok.encode("中国的首都是北京。")
    assert UNK_ID not in ids and len(ids) == 9
    assert tok.decode(ids) == "中 国 的 首 都 是 北 京 。"
    assert set(tok.vocab[4:]) == set("中国的首都是哪里?北京。")


def test_word_tokenizer_punctuation_in_every_script():
    tok = WordTokenizer([])
    assert tok.split("¿Dónde? «Paris»,「東京」。") == ["¿", "Dónde", "?", "«", "Paris", "»", ",", "「", "東", "京", "」", "。"]
    assert tok.split("foo_bar") == ["foo", "_", "bar"]  # _ is punctuation (Pc); \w+ kept it inside the word
    assert tok.split("हिन्दी।") == ["हिन्दी", "।"]  # vowel signs stay in the word; \w+ cut it into 6 pieces
    assert tok.split("서울입니다!") == ["서울입니다", "!"]  # Hangul is not CJK ideographs: words, as BERT
    assert tok.split("€5 50°") == ["€5", "50°"]  # symbols that are not punctuation stay attached, as BERT


@pytest.mark.skipif(not BERT, reason="neither transformers' BasicTokenizer nor tokenizers' BertPreTokenizer is installed")
@pytest.mark.parametrize("text", MIXED)
def test_word_split_equals_bert_basic_tokenizer(text):
    ours = WordTokenizer([]).split(text)
    for name, theirs in BERT.items():
        assert ours == theirs(text), name


@pytest.mark.skipif("slow" not in BERT, reason="transformers' BasicTokenizer is not importable")
@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=30)
       | st.text(alphabet="ab 北京。,?!_-\u3000\t\u0301\u00e9é", max_size=30))
def test_word_split_equals_bert_on_random_text(text):
    assert WordTokenizer([]).split(text) == BERT["slow"](text)
