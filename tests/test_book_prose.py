"""Every verdict in the book's prose is computed: fast checks on the chapters'
sources (no build needed).

- A markdown paragraph that reports what a run showed ("in this run", "this
  run", "measured", "faster than", "agrees") holds a value glued by a cell
  (``{glue:...}`KEY```): the sentence is computed from the run, or phrased by
  the cell. A few phrases that say *how* something is measured, not what a
  run showed, are allowed without one (``METHOD``).
- Every ``{glue}`` key a chapter uses is glued by a code cell of the same
  chapter (a key glued nowhere, or only in another chapter, would show a
  stale or missing value).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

BOOK = Path(__file__).resolve().parent.parent / "book"

VERDICT = re.compile(r"\b(in this run|this run|measured|faster than|agrees)\b", re.I)

# "measured" in a sentence about the method, not about a result
METHOD = re.compile(
    r"\b(?:what was measured|not measured|can be measured|is measured against|"
    r"measured in the same run|the measured (?:points|path|time)|when it was measured)\b",
    re.I)

GLUE_USE = re.compile(r"\{glue(?::\w+)?\}`([^`]+)`")
GLUE_CALL = re.compile(r"""\bglue\(\s*["']([^"']+)["']""")
FENCE = re.compile(r"^(`{3,}|~{3,})")


def split(text: str) -> tuple[list[str], list[str]]:
    """(markdown paragraphs, code blocks) of a MyST notebook's source."""
    if text.startswith("---"):
        text = text[text.index("\n---", 3) + 4:]
    paragraphs, code = [], []
    lines: list[str] = []
    fence, block = None, []
    for line in text.splitlines():
        s = line.strip()
        if fence is not None:
            if s.startswith(fence) and not s.strip(fence[0]):
                code.append("\n".join(block))
                fence, block = None, []
            else:
                block.append(line)
            continue
        m = FENCE.match(s)
        if m or not s:
            if lines:
                paragraphs.append(" ".join(lines))
                lines = []
            if m:
                fence, block = m.group(1), [s]
            continue
        lines.append(s)
    if lines:
        paragraphs.append(" ".join(lines))
    return paragraphs, code


def chapters() -> list[Path]:
    return sorted(BOOK.glob("*.md"))


def unglued_verdicts(text: str) -> list[str]:
    paragraphs, _code = split(text)
    bad = []
    for para in paragraphs:
        if GLUE_USE.search(para):
            continue
        words = [m.group(0) for m in VERDICT.finditer(METHOD.sub("", para))]
        if words:
            bad.append(f"{words[0]!r} in: {para[:200]}")
    return bad


def glue_keys(text: str) -> tuple[set[str], set[str]]:
    """(keys the prose uses, keys the code cells glue)."""
    paragraphs, code = split(text)
    used = set()
    for para in paragraphs:
        used |= set(GLUE_USE.findall(para))
    glued = set()
    for block in code:
        if block.lstrip("`~").startswith("{code-cell}"):
            glued |= set(GLUE_CALL.findall(block))
    return used, glued


@pytest.mark.parametrize("page", chapters(), ids=lambda p: p.name)
def test_no_verdict_without_a_glued_value(page: Path):
    assert unglued_verdicts(page.read_text()) == []


@pytest.mark.parametrize("page", chapters(), ids=lambda p: p.name)
def test_every_glue_key_is_glued_in_the_same_chapter(page: Path):
    used, glued = glue_keys(page.read_text())
    assert used - glued == set()


def test_the_checks_catch_what_they_should():
    page = """---
jupytext: {}
---
# A chapter

```{code-cell} ipython3
glue("x_ratio", 1.2, display=False)
```

In this run the ratio was {glue:text}`x_ratio`.

In this run ngxlab was faster than nginx.

The gap closes as the batch grows, and the measurement agrees within its noise.

C is measured against the same loop in Python; when it was measured, fine.

```python
# in this run, inside a code block: not prose
```

It was {glue:text}`y_other`.
"""
    bad = unglued_verdicts(page)
    assert len(bad) == 2
    assert bad[0].startswith("'In this run' in: In this run ngxlab was faster")
    assert bad[1].startswith("'agrees' in: The gap closes")
    used, glued = glue_keys(page)
    assert used == {"x_ratio", "y_other"} and glued == {"x_ratio"}
