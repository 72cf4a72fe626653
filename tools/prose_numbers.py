"""Numbers in a chapter's prose must come from the chapter's own cells.

A number written in a markdown cell is accepted when it is

1. inserted by MyST-NB's glue (``{glue:text}`name:.2f```): then it is not in the markdown at all;
2. printed by a code cell of the same chapter (any text output), equal to the printed value at the
   precision the prose writes it (``0.996`` matches a printed ``0.99612``; ``36 %`` matches ``0.36`` or ``36.0``);
3. written in a code cell of the same chapter (a size or constant the reader can see: ``D = 64``, ``10000``);
4. a constant by rule: integers from 0 to 12, years (1900-2099), the number of a section, table, figure,
   equation, chapter, layer, row or question (``section 3.2``, ``Table 3``, ``Q17``), a version number, a
   citation key, or anything inside inline code (except a span that is only a number, such as ```1e-6```),
   math written as a formula (``$...$``), links and labels;
5. listed in :data:`ALLOWED` for that chapter with the reason (published numbers quoted from a paper or the
   source text).

Anything else is a number the text computed by hand, and it can drift from the outputs: glue it.

Every ``{glue:...}`name``` role must also have a matching ``glue("name", ...)`` output in the notebook.

Usage: ``python tools/prose_numbers.py [book/NN_name.ipynb ...]`` prints each offending number with its cell.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# chapter stem -> {number as written: why it may stand in the prose without a cell printing it}
ALLOWED: dict[str, dict[str, str]] = {
    "*": {
        "65M": "the paper's published parameter count of the base model (Table 3)",
        "213M": "the paper's published parameter count of the big model (Table 3)",
        "124M": "GPT-2 small's published parameter count",
        "10000": "the sinusoidal/RoPE wavelength base of the papers",
        "10,000": "the sinusoidal/RoPE wavelength base of the papers",
        "512": "the paper's model width D",
        "2048": "the paper's feed-forward width",
        "37000": "the paper's shared BPE vocabulary",
        "37,000": "the paper's shared BPE vocabulary",
        "50257": "GPT-2's vocabulary size",
        "50,257": "GPT-2's vocabulary size",
        "1024": "GPT-2's context length",
        "250,880": "BLOOM's embedding-table size (padded vocabulary)",
        "250880": "BLOOM's embedding-table size (padded vocabulary)",
        "250,680": "BLOOM's published tokenizer size",
        "250680": "BLOOM's published tokenizer size",
        "46,145": "the vocabulary size quoted in the source text",
        "46145": "the vocabulary size quoted in the source text",
        "768": "GPT-2 small's width",
        "64": "a head width of the papers (512 / 8)",
    },
    "04_positional_encodings": {
        "32768": "the longest context Chen et al. (2023) reach by position interpolation",
        "2048": "LLaMA's published training context, as quoted from Chen et al. (2023)",
        "1000": "Chen et al.'s (2023) published number of fine-tuning steps",
    },
    "05_attention_vs_cnn_rnn": {"4096": "Mistral 7B's published sliding-window size"},
    "06_transformer_blocks": {"4000": "the paper's published warm-up steps (section 5.3)"},
}

_NUMBER = re.compile(
    r"(?<![\w.])"                      # not inside a word or after a dot
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)"
    r"(?:\s*(?:[×x]|\\times)\s*10(?:\^\{?(?P<exp1>[-−]?\d+)\}?|(?P<exp2>[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+)))?"
    r"(?:e(?P<exp3>[-+]?\d+))?"
    r"(?P<suffix>\s?%|\s?[kKMGB](?![a-zA-Z])|\s?GiB|\s?MiB|\s?GB|\s?MB)?"
)
_SUPERSCRIPT = str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")
_CONTEXT_WORDS = re.compile(
    r"(?:section|sections|§|table|tables|figure|fig\.|equation|eq\.|chapter|chapters|layer|layers|row|rows|"
    r"part|step|line|lines|appendix|version|v|python|torch|pytorch|transformers|jupyter book|nbgrader|"
    r"ex|exercise|cell|cells|q|page|pages|head|block|blocks)\s*$",
    re.I,
)
_STRIP = [
    re.compile(r"```.*?```", re.S),              # fenced code
    re.compile(r"\$\$.*?\$\$", re.S),             # display math
    # inline math is checked like prose (a quoted "$\\approx 0.30$" is a number), only its commands go
    re.compile(r"\\[a-zA-Z]+"),
    re.compile(r"\{[\w:-]+\}`[^`]*`"),           # MyST roles: {cite}`...`, {glue:text}`...`, {ref}`...`
    re.compile(r"``[^`]*``|`[^`\n]*`"),           # inline code
    re.compile(r"^\([\w-]+\)=\s*$", re.M),        # labels
    re.compile(r"\]\([^)]*\)"),                  # link targets
    re.compile(r"<[^>\n]+>"),                    # HTML tags
    re.compile(r"^:::.*$|^```\{.*$", re.M),       # directive fences
    re.compile(r"\bQ\d+\b"),                     # question ids
    re.compile(r"\b(?:19|20)\d{2}[a-z]?\b"),     # years (and citation keys like 2017a)
    re.compile(r"\b\d+(?:\.\d+){2,}\b"),         # version numbers 1.0.4
    re.compile(r"\b[A-Za-z]+\d+[A-Za-z\d]*\b"),  # identifiers with digits: GPT2, fp16, ex02, W1
]


def _value(match: re.Match) -> tuple[float, int] | None:
    """The number's value and how many significant digits the prose gives it."""
    raw = match.group("num").replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    digits = len(raw.replace(".", "").lstrip("0")) or 1
    exp = match.group("exp1") or match.group("exp2") or match.group("exp3")
    if exp:
        value *= 10.0 ** int(exp.translate(_SUPERSCRIPT).replace("−", "-"))
    return value, digits


def _output_numbers(text: str) -> list[float]:
    out = []
    for m in re.finditer(r"[-+]?\d[\d,]*(?:\.\d+)?(?:[eE][-+]?\d+)?", text):
        try:
            out.append(float(m.group().replace(",", "")))
        except ValueError:
            pass
    return out


def _matches(value: float, digits: int, printed: list[float], percent: bool = False) -> bool:
    for p in printed:
        for cand in ((abs(p), abs(p) * 100) if percent else (abs(p),)):
            if cand == 0 and value == 0:
                return True
            if cand == 0 or value == 0:
                continue
            # round the printed value to the prose's significant digits
            scale = 10 ** (math.floor(math.log10(cand)) - digits + 1)
            if abs(cand - value) <= scale / 2 * (1 + 1e-9):
                return True
            if math.isclose(cand, value, rel_tol=1e-9):
                return True
    return False


def _cell_text_outputs(cell: dict) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if "text" in out:
            parts.append("".join(out["text"]))
        for mime in ("text/plain", "text/markdown", "text/html", "text/latex"):
            data = out.get("data", {}).get(mime)
            if data:
                parts.append("".join(data))
    return "\n".join(parts)


def glue_names(nb: dict) -> set[str]:
    names = set()
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            scrap = out.get("metadata", {}).get("scrapbook")
            if scrap and "name" in scrap:
                names.add(scrap["name"])
    return names


def check_notebook(path: Path) -> list[str]:
    """Return one message per number in the prose that no cell backs, and per glue role without its glue."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    # sizes and constants written in the code count, but not tolerances in scientific notation (atol=1e-6)
    printed = _output_numbers(re.sub(r"\d(?:\.\d+)?[eE][-+]?\d+", " ", code)) + _output_numbers(
        "\n".join(_cell_text_outputs(c) for c in nb["cells"] if c["cell_type"] == "code"))
    allowed = {**ALLOWED["*"], **ALLOWED.get(path.stem, {})}
    glued = glue_names(nb)
    # section numbers the chapter gives its own headings ("### 19.2 The classic bug") may be cited anywhere in it
    sections = {m for c in nb["cells"] if c["cell_type"] == "markdown"
                for m in re.findall(r"^#+\s*(\d+(?:\.\d+)+)", "".join(c["source"]), re.M)}
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "markdown":
            continue
        src = "".join(cell["source"])
        for name in re.findall(r"\{glue(?::\w+)?\}`([^`:]+)", src):
            if name not in glued:
                problems.append(f"{path.name} cell {i}: glue role names {name!r}, but no cell glues it")
        # an inline code span that is only a number (`1e-6`, `0.25`) quotes a value: check it like prose
        text = re.sub(r"(?<!`)`\s*([-+]?\d[\d.,]*(?:e[-+]?\d+)?)\s*`(?!`)", r" \1 ", src)
        for pattern in _STRIP:
            text = pattern.sub(" ", text)
        for m in _NUMBER.finditer(text):
            written = m.group(0).strip()
            before = text[max(0, m.start() - 20): m.start()]
            if _CONTEXT_WORDS.search(before):
                continue
            parsed = _value(m)
            if parsed is None:
                continue
            value, digits = parsed
            if value == int(value) and 0 <= value <= 12 and not m.group("suffix"):
                continue
            if written in allowed or m.group("num") in allowed or m.group("num") in sections:
                continue
            suffix = (m.group("suffix") or "").strip()
            scale = {"k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9}.get(suffix, 1.0)
            candidates = [value * scale, value]
            if any(_matches(v, digits, printed, percent=suffix == "%") for v in candidates):
                continue
            context = text[max(0, m.start() - 40): m.end() + 20].replace("\n", " ").strip()
            problems.append(f"{path.name} cell {i}: {written!r} is not printed by any cell (…{context}…)")
    return problems


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))
    problems = [p for path in paths for p in check_notebook(path)]
    print("\n".join(problems) or "every number in the prose is printed or glued by a cell")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
