"""The simulator's "model": a plain, deterministic word overlap, so tests can predict it.

The appointment's words are its treatment codes and reason; a candidate's are its name,
description and category (not the practice's note). Words are runs of letters and digits,
lower-cased, at least three characters, not a common English stop word, a trailing plural `s`
dropped ("gums" matches "gum"). A candidate that shares no word is not suggested. One that does
scores 1000 x (shared words / the appointment's words), at least 1, and its rationale names the
shared words. Best first; equal scores keep the candidates' order; at most `limit`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MAX_SCORE = 1000
_WORD = re.compile(r"[a-z0-9]+")
_STOP_WORDS = frozenset(
    [
        "about",
        "after",
        "all",
        "also",
        "and",
        "any",
        "are",
        "asked",
        "but",
        "can",
        "for",
        "from",
        "had",
        "has",
        "have",
        "her",
        "his",
        "how",
        "into",
        "its",
        "may",
        "more",
        "not",
        "off",
        "one",
        "our",
        "out",
        "per",
        "she",
        "should",
        "that",
        "the",
        "their",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "too",
        "two",
        "very",
        "was",
        "were",
        "what",
        "when",
        "which",
        "while",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)


@dataclass(frozen=True, slots=True)
class Ranked:
    product_id: str
    score: int
    rationale: str


def words(*texts: str | None) -> list[str]:
    """The distinct words of `texts`, in the order they first appear."""
    found: dict[str, None] = {}
    for text in texts:
        for word in _WORD.findall((text or "").lower()):
            if len(word) < 3 or word in _STOP_WORDS:
                continue
            if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
                word = word[:-1]
            found.setdefault(word, None)
    return list(found)


def rank(
    treatment_codes: list[str],
    reason: str | None,
    candidates: list[dict[str, Any]],
    limit: int,
) -> list[Ranked]:
    wanted = words(*treatment_codes, reason)
    if not wanted:
        return []
    ranked: list[tuple[int, int, Ranked]] = []
    for position, candidate in enumerate(candidates):
        offered = set(words(candidate["name"], candidate["description"], candidate["category"]))
        shared = [word for word in wanted if word in offered]
        if not shared:
            continue
        score = max(1, min(MAX_SCORE, MAX_SCORE * len(shared) // len(wanted)))
        rationale = "Shares these words with the appointment: " + ", ".join(shared) + "."
        ranked.append((-score, position, Ranked(str(candidate["product_id"]), score, rationale)))
    ranked.sort(key=lambda item: (item[0], item[1]))
    return [item[2] for item in ranked[:limit]]
