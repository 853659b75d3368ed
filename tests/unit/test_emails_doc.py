"""docs/EMAILS.md shows every email exactly as syncd renders it (so it cannot go stale).

Regenerate with ``python -m syncd.notify.emaildocs --docs > docs/EMAILS.md``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.domain.model import NoticeKind
from syncd.notify.compose import compose, render
from syncd.notify.emaildocs import EXAMPLES, docs

DOC = Path(__file__).resolve().parents[2] / "docs" / "EMAILS.md"


def test_every_kind_has_an_example() -> None:
    assert set(EXAMPLES) == {k.value for k in NoticeKind}


@pytest.mark.parametrize("kind", [k.value for k in NoticeKind])
def test_doc_contains_the_rendered_text_of(kind: str) -> None:
    subject, text, _html = render(EXAMPLES[kind], kind)
    doc = DOC.read_text(encoding="utf-8")
    assert f"Subject: {subject}  \n" in doc
    assert f"```text\n{text}```\n" in doc, (
        f"docs/EMAILS.md is stale for {kind}: "
        "run python -m syncd.notify.emaildocs --docs > docs/EMAILS.md"
    )


def test_doc_is_exactly_the_generated_one() -> None:
    assert DOC.read_text(encoding="utf-8") == docs(), (
        "docs/EMAILS.md is stale: run python -m syncd.notify.emaildocs --docs > docs/EMAILS.md"
    )


@pytest.mark.parametrize("kind", [k.value for k in NoticeKind])
def test_the_sent_text_part_is_the_documented_text(kind: str) -> None:
    msg = compose(EXAMPLES[kind], kind, "someone@example.org", "<x@y>", "B <b@example.com>")
    body = msg.get_body(("plain",))
    assert body is not None
    assert body.get_content() == render(EXAMPLES[kind], kind)[1]
