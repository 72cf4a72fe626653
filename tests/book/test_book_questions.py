"""Every question a chapter owns has a section whose heading names it, with executed evidence in it."""
import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[2]

# chapter -> the source's questions it answers (the course outline's chapter plan)
QUESTIONS = {
    "01_sequences": [1, 2, 34, 35],
    "02_self_attention": [16, 17, 18, 20],
    "03_multi_head_attention": [19],
    "04_positional_encodings": [21],
    "05_attention_vs_cnn_rnn": [22, 23],
    "06_transformer_blocks": [7, 25],
    "07_masks": [8, 9, 12, 28, 32],
    "08_training": [3, 11, 12, 14, 26, 30],
}


@pytest.mark.parametrize("chapter", sorted(QUESTIONS))
def test_each_question_has_a_section_with_executed_evidence(chapter):
    nb = nbformat.read(ROOT / "book" / f"{chapter}.ipynb", as_version=4)
    sections, current = {}, None
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    ids = [int(q) for q in re.findall(r"\bQ(\d+)\b", line)]
                    current = ids or (current if line.startswith("###") else None)
                    for q in ids:
                        sections.setdefault(q, 0)
        elif cell.cell_type == "code" and current and cell.get("outputs"):
            for q in current:
                sections[q] += 1
    for q in QUESTIONS[chapter]:
        assert q in sections, f"{chapter}: no heading names Q{q}"
        assert sections[q] > 0, f"{chapter}: the Q{q} section has no executed code cell with output"
