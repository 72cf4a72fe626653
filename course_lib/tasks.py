"""Small generated sequence-to-sequence tasks and their padded batches.

Used from chapter 07 (masks) on, wherever a model must be trained in seconds on a CPU.
The tasks follow the encoder-decoder setting of Vaswani et al., "Attention Is All You
Need", 2017: a source string goes into the encoder, the target string comes out of the
decoder one character at a time.

Tasks (each example is a dict ``{"src": str, "tgt": str}``):

* ``copy``: ``"cabd" -> "cabd"``.
* ``reverse``: ``"cabd" -> "dbac"``.
* ``sort``: ``"cabd" -> "abcd"``.
* ``dates``: ``"March 3, 2021"``, ``"3/3/21"`` or ``"2021年3月3日星期三"`` -> ``"2021-03-03"``
  (written with ``babel`` when it is installed; otherwise by this module's own
  formats, which are tested to give the same strings).
* ``capitals``: the source text's question-answering example, at the character level:
  ``"中国的首都是哪里?" -> "北京"``, for the ~40 countries of :data:`CAPITALS`.

:func:`make_dataset` returns a ``datasets.Dataset`` (built in memory, nothing is
downloaded); the other functions work on plain lists too.

Tokens: ``course_lib.tokenization.CharTokenizer`` (one id per character, built from the
examples with ``CharTokenizer.from_examples``), whose special ids ``PAD_ID = 0``,
``BOS_ID = 1``, ``EOS_ID = 2``, ``UNK_ID = 3`` and padding (``pad_batch``) live in
``course_lib.tokenization`` too; this module only generates tasks and batches them.

Batches (:func:`make_batch`): for teacher forcing the decoder reads ``BOS + target``
and is trained to predict ``target + EOS``::

    src     (B, S)  c a b d <pad>
    tgt_in  (B, T)  <bos> d b a c
    tgt_out (B, T)  d b a c <eos>
"""
from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator, Sequence

import torch

from course_lib.tokenization import pad_batch

if TYPE_CHECKING:
    from course_lib.tokenization import CharTokenizer

__all__ = [
    "copy_examples", "reverse_examples", "sort_examples", "date_examples", "capitals_examples",
    "CAPITALS", "CAPITAL_TEMPLATES", "DATE_FORMATS", "TASKS", "make_examples", "make_dataset",
    "Seq2SeqBatch", "make_batch", "iterate_batches",
]

# --- Generated tasks -----------------------------------------------------------------------------

def _random_strings(n: int, min_len: int, max_len: int, alphabet: str, seed: int) -> list[str]:
    if not 1 <= min_len <= max_len:
        raise ValueError(f"expected 1 <= min_len <= max_len, received min_len={min_len}, max_len={max_len}")
    rng = random.Random(seed)
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(min_len, max_len))) for _ in range(n)]


def copy_examples(n: int, min_len: int = 3, max_len: int = 8, alphabet: str = "abcdefghij",
                  seed: int = 0) -> list[dict]:
    """``n`` random strings and themselves: ``"cabd" -> "cabd"``."""
    return [{"src": s, "tgt": s} for s in _random_strings(n, min_len, max_len, alphabet, seed)]


def reverse_examples(n: int, min_len: int = 3, max_len: int = 8, alphabet: str = "abcdefghij",
                     seed: int = 0) -> list[dict]:
    """``n`` random strings and their reversal: ``"cabd" -> "dbac"``."""
    return [{"src": s, "tgt": s[::-1]} for s in _random_strings(n, min_len, max_len, alphabet, seed)]


def sort_examples(n: int, min_len: int = 3, max_len: int = 8, alphabet: str = "abcdefghij",
                  seed: int = 0) -> list[dict]:
    """``n`` random strings and their characters sorted: ``"cabd" -> "abcd"``."""
    return [{"src": s, "tgt": "".join(sorted(s))} for s in _random_strings(n, min_len, max_len, alphabet, seed)]


# Dates. Each format is (locale, babel format name); the module's own writer gives the same strings.
DATE_FORMATS = (("en", "short"), ("en", "medium"), ("en", "long"), ("en", "full"), ("zh", "medium"), ("zh", "full"))
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_WEEKDAYS_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAYS_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")


def _format_date_builtin(d: datetime.date, locale: str, fmt: str) -> str:
    """The strings babel (CLDR) writes for these six formats, without babel."""
    if locale == "en":
        if fmt == "short":
            return f"{d.month}/{d.day}/{d.year % 100:02d}"
        if fmt == "medium":
            return f"{_MONTHS[d.month - 1][:3]} {d.day}, {d.year}"
        if fmt == "long":
            return f"{_MONTHS[d.month - 1]} {d.day}, {d.year}"
        if fmt == "full":
            return f"{_WEEKDAYS_EN[d.weekday()]}, {_MONTHS[d.month - 1]} {d.day}, {d.year}"
    if locale == "zh":
        if fmt == "medium":
            return f"{d.year}年{d.month}月{d.day}日"
        if fmt == "full":
            return f"{d.year}年{d.month}月{d.day}日{_WEEKDAYS_ZH[d.weekday()]}"
    raise ValueError(f"date format: expected one of {DATE_FORMATS}, received {(locale, fmt)}")


def _format_date(d: datetime.date, locale: str, fmt: str, use_babel: bool | None = None) -> str:
    if use_babel is None or use_babel:
        try:
            from babel.dates import format_date
        except ImportError:
            if use_babel:
                raise
        else:
            return format_date(d, format=fmt, locale=locale)
    return _format_date_builtin(d, locale, fmt)


def date_examples(n: int, seed: int = 0, formats: Sequence[tuple[str, str]] = DATE_FORMATS,
                  first_year: int = 1950, use_babel: bool | None = None) -> list[dict]:
    """Date normalisation: a date written in one of ``formats`` -> ISO ``"YYYY-MM-DD"``.

    Dates are drawn uniformly from the 100 years starting at ``first_year``, so the
    two-digit year of ``"3/3/21"`` is unambiguous. ``use_babel``: None = babel if
    installed, True = babel (error if missing), False = the built-in writer.
    """
    rng = random.Random(seed)
    start = datetime.date(first_year, 1, 1)
    span = (datetime.date(first_year + 100, 1, 1) - start).days
    out = []
    for _ in range(n):
        d = start + datetime.timedelta(days=rng.randrange(span))
        locale, fmt = formats[rng.randrange(len(formats))]
        out.append({"src": _format_date(d, locale, fmt, use_babel), "tgt": d.isoformat()})
    return out


# The source's question-answering example, "中国的首都是哪里?" -> "北京", for more countries.
# (country in Chinese, capital in Chinese, country in English, capital in English)
CAPITALS = (
    ("中国", "北京", "China", "Beijing"),
    ("日本", "东京", "Japan", "Tokyo"),
    ("韩国", "首尔", "South Korea", "Seoul"),
    ("朝鲜", "平壤", "North Korea", "Pyongyang"),
    ("蒙古", "乌兰巴托", "Mongolia", "Ulaanbaatar"),
    ("越南", "河内", "Vietnam", "Hanoi"),
    ("泰国", "曼谷", "Thailand", "Bangkok"),
    ("印度", "新德里", "India", "New Delhi"),
    ("巴基斯坦", "伊斯兰堡", "Pakistan", "Islamabad"),
    ("伊朗", "德黑兰", "Iran", "Tehran"),
    ("土耳其", "安卡拉", "Turkey", "Ankara"),
    ("俄罗斯", "莫斯科", "Russia", "Moscow"),
    ("法国", "巴黎", "France", "Paris"),
    ("英国", "伦敦", "United Kingdom", "London"),
    ("德国", "柏林", "Germany", "Berlin"),
    ("意大利", "罗马", "Italy", "Rome"),
    ("西班牙", "马德里", "Spain", "Madrid"),
    ("葡萄牙", "里斯本", "Portugal", "Lisbon"),
    ("荷兰", "阿姆斯特丹", "Netherlands", "Amsterdam"),
    ("比利时", "布鲁塞尔", "Belgium", "Brussels"),
    ("瑞士", "伯尔尼", "Switzerland", "Bern"),
    ("奥地利", "维也纳", "Austria", "Vienna"),
    ("希腊", "雅典", "Greece", "Athens"),
    ("瑞典", "斯德哥尔摩", "Sweden", "Stockholm"),
    ("挪威", "奥斯陆", "Norway", "Oslo"),
    ("芬兰", "赫尔辛基", "Finland", "Helsinki"),
    ("丹麦", "哥本哈根", "Denmark", "Copenhagen"),
    ("波兰", "华沙", "Poland", "Warsaw"),
    ("埃及", "开罗", "Egypt", "Cairo"),
    ("肯尼亚", "内罗毕", "Kenya", "Nairobi"),
    ("美国", "华盛顿", "United States", "Washington"),
    ("加拿大", "渥太华", "Canada", "Ottawa"),
    ("墨西哥", "墨西哥城", "Mexico", "Mexico City"),
    ("巴西", "巴西利亚", "Brazil", "Brasília"),
    ("阿根廷", "布宜诺斯艾利斯", "Argentina", "Buenos Aires"),
    ("澳大利亚", "堪培拉", "Australia", "Canberra"),
    ("新西兰", "惠灵顿", "New Zealand", "Wellington"),
)
# The first template is the source's own question; the others give a model more ways to ask.
CAPITAL_TEMPLATES = ("{}的首都是哪里?", "{}的首都是什么?", "{}首都在哪里?")


def capitals_examples(templates: Sequence[str] = CAPITAL_TEMPLATES[:1], english: bool = False) -> list[dict]:
    """Character-level question answering: ``"中国的首都是哪里?" -> "北京"``, one example per country and template.

    ``english=True`` asks ``"What is the capital of China?" -> "Beijing"`` instead
    (``templates`` must then contain ``{}`` in English questions).
    """
    if english and templates == CAPITAL_TEMPLATES[:1]:
        templates = ("What is the capital of {}?",)
    out = []
    for template in templates:
        for country_zh, capital_zh, country_en, capital_en in CAPITALS:
            out.append({"src": template.format(country_en if english else country_zh),
                        "tgt": capital_en if english else capital_zh})
    return out


TASKS = {"copy": copy_examples, "reverse": reverse_examples, "sort": sort_examples, "dates": date_examples}


def make_examples(task: str, n: int | None = None, seed: int = 0, **kwargs) -> list[dict]:
    """Examples of a task by name: ``"copy"``, ``"reverse"``, ``"sort"``, ``"dates"`` (need ``n``) or ``"capitals"``."""
    if task == "capitals":
        return capitals_examples(**kwargs)
    if task not in TASKS:
        raise ValueError(f"make_examples: expected a task in {sorted(TASKS) + ['capitals']}, received {task!r}")
    if n is None:
        raise ValueError(f"make_examples: task {task!r} needs the number of examples n")
    return TASKS[task](n, seed=seed, **kwargs)


def make_dataset(task: str, n: int | None = None, seed: int = 0, **kwargs):
    """The task as a ``datasets.Dataset`` with string columns ``"src"`` and ``"tgt"`` (in memory, offline).

    Example::

        ds = make_dataset("reverse", n=1000, seed=0).train_test_split(test_size=0.1, seed=0)
    """
    from datasets import Dataset  # imported here: the rest of the module does not need it

    examples = make_examples(task, n, seed=seed, **kwargs)
    return Dataset.from_dict({"src": [e["src"] for e in examples], "tgt": [e["tgt"] for e in examples]})


# --- Padded batches ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Seq2SeqBatch:
    """A padded batch for teacher forcing.

    Fields:
        src: source ids ``(B, S)``.
        tgt_in: decoder input, BOS + target, ``(B, T)``.
        tgt_out: labels, target + EOS, ``(B, T)``; ``PAD_ID`` where padded (ignored by the loss).
        src_text, tgt_text: the strings, for printing.

    The id tensors are padded with ``course_lib.tokenization.PAD_ID``.
    """

    src: torch.Tensor
    tgt_in: torch.Tensor
    tgt_out: torch.Tensor
    src_text: tuple[str, ...]
    tgt_text: tuple[str, ...]


def make_batch(examples, tokenizer: CharTokenizer, src_side: str = "right", tgt_side: str = "right",
               src_eos: bool = False) -> Seq2SeqBatch:
    """Encode and pad examples into a :class:`Seq2SeqBatch`.

    Args:
        examples: a list of ``{"src", "tgt"}`` dicts, or a ``datasets`` column dict
            ``{"src": [...], "tgt": [...]}`` (what ``dataset[i:j]`` returns).
        tokenizer: a ``course_lib.tokenization`` tokenizer (anything with
            ``encode(text, add_bos=..., add_eos=...)``), usually ``CharTokenizer.from_examples(examples)``.
        src_side, tgt_side: where the pads go (``"right"`` or ``"left"``).
        src_eos: end each source with EOS.

    Raises:
        ValueError: no example, or a side that is not ``"left"``/``"right"`` (from ``pad_batch``).

    Shape:
        ``src (B, S)``, ``tgt_in (B, T)``, ``tgt_out (B, T)`` with ``T = longest target + 1``.
    """
    if isinstance(examples, dict):
        srcs, tgts = list(examples["src"]), list(examples["tgt"])
    else:
        srcs, tgts = [e["src"] for e in examples], [e["tgt"] for e in examples]
    src = pad_batch([tokenizer.encode(s, add_eos=src_eos) for s in srcs], side=src_side)  # (B, S)
    tgt_in = pad_batch([tokenizer.encode(t, add_bos=True) for t in tgts], side=tgt_side)  # (B, T)
    tgt_out = pad_batch([tokenizer.encode(t, add_eos=True) for t in tgts], side=tgt_side)  # (B, T)
    return Seq2SeqBatch(src, tgt_in, tgt_out, tuple(srcs), tuple(tgts))


def iterate_batches(dataset, tokenizer: CharTokenizer, batch_size: int, shuffle: bool = True, seed: int = 0,
                    drop_last: bool = False, **batch_kwargs) -> Iterator[Seq2SeqBatch]:
    """One epoch of padded batches from a list of examples or a ``datasets.Dataset``.

    The order is shuffled with a ``random.Random(seed)``: the same seed gives the same batches.
    """
    n = len(dataset)
    order = list(range(n))
    if shuffle:
        random.Random(seed).shuffle(order)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        if drop_last and len(idx) < batch_size:
            break
        if isinstance(dataset, (list, tuple)):
            chunk = [dataset[i] for i in idx]
        else:
            chunk = dataset[idx]  # datasets.Dataset: a column dict
        yield make_batch(chunk, tokenizer, **batch_kwargs)
