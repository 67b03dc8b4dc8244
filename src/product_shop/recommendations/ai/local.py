"""The default suggestion engine: local, deterministic and explainable, with no model to download
and no network.

It ranks the candidate products for one appointment by two things a developer can explain and a
clinician can check:

1. Text relevance. A TF-IDF model (scikit-learn's `TfidfVectorizer`: English stop words, words of
   two or more letters, unigrams and bigrams, sublinear term frequency) is fitted on the
   candidates' text (name, description, category and the practice's note). The query is the
   appointment's reason plus, for each treatment code, the related words from the built-in
   vocabulary (treatments.py); an unknown code contributes its own parts as words ("ORTHO-RETAINER"
   gives "ortho", "retainer"). Relevance is the cosine similarity of the query and a product, in
   0..1. Words are folded to a simple singular ("gums" and "gum" match, "implants" and
   "implant", "teeth" and "tooth") so that a reason's wording need not match a description's.
2. Category rules. The vocabulary says which product categories suit each treatment (interdental
   cleaning after scaling and root planing, mouthguards for bruxism). A product in such a
   category gets a fixed boost, once however many codes agree.

Gift vouchers are never suggested, by rule or by words: they are not clinical products, and an AI
suggestion is a clinical prompt (spec §4.1: no product outside a clinical context).

The score, an integer 0..1000:

    score = min(1000, RULE_POINTS * rule + text)
    text  = round(TEXT_POINTS * relevance), at least 1 when any term matched
    rule  = 1 when a treatment's rule covers the product's category, else 0

with RULE_POINTS = 400 and TEXT_POINTS = 600. A rule alone gives 400 and words alone at most 600,
so a product that suits the treatment ranks above one that merely shares words with the
appointment unless those words match closely (relevance above 2/3); among products a rule covers,
the words decide.
A product scoring 0 (no rule, no shared term) is not suggested. Ties are broken by product name
and then product id, so the same input always gives the same list.

Each suggestion's rationale names the matched terms (and whether they came from the reason or a
treatment's words) and the rule, in a sentence a clinician can check. It never refers to other
patients, to what anyone bought or to popularity (spec §4.1: no retail discovery; the engine is
given no such data), and it promises nothing about outcomes."""

from __future__ import annotations

import math
import re
import unicodedata
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.feature_extraction.text import (  # type: ignore[import-untyped]
    ENGLISH_STOP_WORDS,
    TfidfVectorizer,
)

from product_shop.recommendations.ai.port import (
    AppointmentFacts,
    CandidateProduct,
    EngineInfo,
    EngineSuggestion,
    SuggestionEngineError,
)
from product_shop.recommendations.ai.treatments import (
    NEVER_BY_RULE,
    Treatment,
    canonical_category,
    treatment_for,
)

RULE_POINTS = 400
TEXT_POINTS = 600
MAX_SCORE = 1000
# At most this many matched terms are named in a rationale (the strongest first).
RATIONALE_TERMS = 4

# Retail-discovery words carry no clinical meaning; they are never matched and so never appear in
# a rationale (spec §4.1).
_RETAIL_WORDS = frozenset(
    {
        "trending",
        "trend",
        "popular",
        "popularity",
        "bestseller",
        "best",
        "seller",
        "bought",
        "customer",
    }
)

_WORD = re.compile(r"[^\W\d_]{2,}")
_IRREGULAR = {"teeth": "tooth"}
# Words that end like plurals but are not, or whose singular would read wrongly.
_NOT_PLURAL = frozenset({"caries", "series", "species", "braces", "diabetes", "herpes", "lens"})


def _singular(word: str) -> str:
    """A simple, predictable singular: "gums" -> "gum", "brushes" -> "brush", "cavities" ->
    "cavity". Not a stemmer: only the common English plural endings are removed."""
    if word in _IRREGULAR:
        return _IRREGULAR[word]
    if len(word) <= 3 or word in _NOT_PLURAL:
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(("sses", "shes", "ches", "xes", "zzes")):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    return word


def _tokens(text: str) -> list[str]:
    """Lower-cased words of two or more letters (digits and punctuation split words: "alcohol-free"
    is "alcohol", "free"), each folded to its singular."""
    return [_singular(word) for word in _WORD.findall(text.lower())]


def _fold_accents(text: str) -> str:
    return unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")


# The stop list holds every stop word both as written and as the tokenizer folds it, so that
# scikit-learn's consistency check finds nothing to warn about and "this" stays a stop word.
_STOP_WORDS = sorted(
    {w for word in ENGLISH_STOP_WORDS | _RETAIL_WORDS for w in (word, *_tokens(word))}
)


@dataclass(frozen=True, slots=True)
class _Segment:
    """A part of the query and where it came from, for the rationale."""

    source: str  # "the appointment reason" or "the words for <label> (<CODE>)"
    text: str


class LocalSuggestionEngine:
    """TF-IDF relevance plus category rules; see the module docstring for the formula."""

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(name="local-tfidf", version="1")

    def suggest(
        self,
        facts: AppointmentFacts,
        candidates: Sequence[CandidateProduct],
        *,
        limit: int,
    ) -> list[EngineSuggestion]:
        try:
            return _suggest(facts, candidates, limit)
        except SuggestionEngineError:
            raise
        except Exception as exc:  # anything unexpected is the engine failing to answer
            raise SuggestionEngineError(f"local suggestion engine failed: {exc!r}") from exc


def _suggest(
    facts: AppointmentFacts, candidates: Sequence[CandidateProduct], limit: int
) -> list[EngineSuggestion]:
    codes = _distinct(code.strip().upper() for code in facts.treatment_codes if code.strip())
    reason = (facts.reason or "").strip()
    if limit <= 0 or not candidates or (not codes and not reason):
        return []
    products = list({c.product_id: c for c in reversed(candidates)}.values())[::-1]

    known: list[tuple[str, Treatment]] = []
    segments: list[_Segment] = []
    if reason:
        segments.append(_Segment("the appointment reason", reason))
    for code in codes:
        treatment = treatment_for(code)
        if treatment is None:
            # An unknown code is its own words: "ORTHO-RETAINER" -> "ortho retainer".
            words = " ".join(re.split(r"[\W_]+", code.lower())).strip()
            segments.append(_Segment(f"the treatment code {code}", words))
        else:
            known.append((code, treatment))
            text = " ".join(treatment.words)
            segments.append(_Segment(f"the words for {treatment.label} ({code})", text))

    relevance, matched = _relevance(products, segments)

    scored: list[tuple[int, CandidateProduct, str]] = []
    for index, product in enumerate(products):
        if canonical_category(product.category) in NEVER_BY_RULE:
            continue
        rules = _rules_for(product, known)
        text_points = round(TEXT_POINTS * float(relevance[index]))
        if matched[index] and text_points == 0:
            text_points = 1
        score = min(MAX_SCORE, (RULE_POINTS if rules else 0) + text_points)
        if score <= 0:
            continue
        scored.append((score, product, _rationale(product, matched[index], rules)))

    scored.sort(key=lambda item: (-item[0], *_name_order(item[1])))
    return [
        EngineSuggestion(product_id=product.product_id, score=score, rationale=rationale)
        for score, product, rationale in scored[:limit]
    ]


def _name_order(product: CandidateProduct) -> tuple[str, str, uuid.UUID]:
    """Ties: by name (case-insensitively, then exactly), then by product id."""
    return product.name.casefold(), product.name, product.product_id


def _distinct(items: Iterable[str]) -> list[str]:
    """The items in first-seen order, each once."""
    return list(dict.fromkeys(items))


def _document(product: CandidateProduct) -> str:
    parts = (product.name, product.description, product.category, product.practice_note or "")
    return "\n".join(part for part in parts if part)


def _relevance(
    products: Sequence[CandidateProduct], segments: Sequence[_Segment]
) -> tuple[npt.NDArray[np.float64], list[list[tuple[str, str]]]]:
    """Cosine similarity of the query and each product, and per product the matched terms with
    their source, strongest first."""
    none: list[list[tuple[str, str]]] = [[] for _ in products]
    vectorizer = TfidfVectorizer(
        preprocessor=lambda text: _fold_accents(text).lower(),
        tokenizer=_tokens,
        token_pattern=None,
        stop_words=_STOP_WORDS,
        ngram_range=(1, 2),
        sublinear_tf=True,
    )
    try:
        matrix = vectorizer.fit_transform([_document(p) for p in products]).tocsr()
    except ValueError as exc:
        # "empty vocabulary": every candidate's text is stop words, so no term can match.
        if "empty vocabulary" not in str(exc):
            raise
        return np.zeros(len(products), dtype=np.float64), none
    analyse: Callable[[str], list[str]] = vectorizer.build_analyzer()
    vocabulary: dict[str, int] = vectorizer.vocabulary_
    idf: npt.NDArray[np.float64] = vectorizer.idf_

    # The query is weighted as transform() weights a document (sublinear tf, idf, l2 norm), but
    # its counts are summed over the segments analysed one by one, so no bigram spans the reason
    # and a treatment's words.
    counts: Counter[str] = Counter()
    source: dict[str, str] = {}
    for segment in segments:
        for term in analyse(segment.text):
            if term in vocabulary:
                counts[term] += 1
                source.setdefault(term, segment.source)
    query = np.zeros(len(vocabulary), dtype=np.float64)
    for term, count in counts.items():
        query[vocabulary[term]] = (1.0 + math.log(count)) * idf[vocabulary[term]]
    norm = float(np.linalg.norm(query))
    if norm == 0.0:
        return np.zeros(len(products), dtype=np.float64), none
    query /= norm
    relevance = np.clip(np.asarray(matrix @ query, dtype=np.float64).ravel(), 0.0, 1.0)

    names = vectorizer.get_feature_names_out()
    matched: list[list[tuple[str, str]]] = []
    for row in range(matrix.shape[0]):
        start, end = matrix.indptr[row], matrix.indptr[row + 1]
        shared = [
            (float(matrix.data[k]) * float(query[col]), str(names[col]))
            for k, col in zip(range(start, end), matrix.indices[start:end], strict=True)
            if query[col] > 0.0
        ]
        shared.sort(key=lambda item: (-item[0], item[1]))
        matched.append([(term, source[term]) for _, term in shared])
    return relevance, matched


def _rules_for(
    product: CandidateProduct, known: Sequence[tuple[str, Treatment]]
) -> list[tuple[str, Treatment]]:
    """The known treatments whose categories include the product's (never for vouchers)."""
    category = canonical_category(product.category)
    if category is None or category in NEVER_BY_RULE:
        return []
    return [(code, t) for code, t in known if category in t.categories]


def _rationale(
    product: CandidateProduct,
    matched: Sequence[tuple[str, str]],
    rules: Sequence[tuple[str, Treatment]],
) -> str:
    """E.g. 'Matches "periodontal", "gum" in the appointment reason; the category Interdental
    cleaning suits scaling and root planing (PERIO-SRP).'"""
    by_source: dict[str, list[str]] = {}
    for term, source in _named_terms(matched):
        by_source.setdefault(source, []).append(f'"{term}"')
    sentences: list[str] = []
    if by_source:
        clauses = [f"{', '.join(quoted)} in {source}" for source, quoted in by_source.items()]
        sentences.append(f"Matches {_and(clauses)}")
    if rules:
        suits = _and([f"{treatment.label} ({code})" for code, treatment in rules])
        sentences.append(f"the category {product.category} suits {suits}")
    text = "; ".join(sentences)
    return text[:1].upper() + text[1:] + "."


def _and(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _named_terms(matched: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The strongest few matched terms; a word is left out when a phrase containing it is named
    ("root planing" rather than "root planing", "root", "planing")."""
    named: list[tuple[str, str]] = []
    for term, source in matched:
        words = set(term.split())
        if any(words <= set(other.split()) for other, _ in named):
            continue
        kept = [(o, s) for o, s in named if not set(o.split()) <= words]
        if len(kept) == len(named) and len(named) == RATIONALE_TERMS:
            continue
        named = [*kept, (term, source)]
    return named
