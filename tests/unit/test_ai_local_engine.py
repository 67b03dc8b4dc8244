"""The local suggestion engine (recommendations/ai/local.py): TF-IDF relevance plus category rules,
over a few real products from the demo catalogue, without a database. It must rank clinically
sensible products first, explain each one in words a clinician can check, and never use the
language of retail discovery (spec §4.1)."""

from __future__ import annotations

import re
import uuid

import pytest

from product_shop.recommendations.ai import local
from product_shop.recommendations.ai.local import LocalSuggestionEngine
from product_shop.recommendations.ai.port import (
    AppointmentFacts,
    CandidateProduct,
    EngineSuggestion,
    SuggestionEngine,
    SuggestionEngineError,
)
from product_shop.recommendations.ai.treatments import TREATMENTS, canonical_category

_NS = uuid.UUID("0c7a3f56-6a51-4d0f-9a49-64c1f4f6b2a1")


def _product(
    key: str, name: str, description: str, category: str, note: str | None = None
) -> CandidateProduct:
    return CandidateProduct(uuid.uuid5(_NS, key), name, description, category, note)


# Copied from the demo catalogue (product_shop/demo/data.py), Harbour Dental Care's notes.
IO9 = _product(
    "oralb-io9",
    "Oral-B iO Series 9 Electric Toothbrush",
    "Magnetic drive, AI brushing recognition across 16 zones, pressure sensor and 7 modes.",
    "Electric toothbrushes",
    "Recommended after periodontal treatment.",
)
PRO3 = _product(
    "oralb-pro3",
    "Oral-B Pro 3 3000 Electric Toothbrush",
    "Round oscillating head, visible pressure control and a 2-minute timer.",
    "Electric toothbrushes",
)
TEPE = _product(
    "tepe-original-mixed",
    "TePe Interdental Brushes Original, Mixed Pack (8)",
    "Eight brushes in four sizes; ask your hygienist which sizes suit your gaps.",
    "Interdental cleaning",
    "Use the sizes your hygienist marked for you.",
)
WATERPIK = _product(
    "waterpik-cordless",
    "Waterpik Cordless Advanced Water Flosser",
    "Rechargeable water flosser with 3 pressure settings, for bridges, implants and braces.",
    "Interdental cleaning",
)
CURAPROX = _product(
    "curaprox-5460",
    "Curaprox CS 5460 Ultra Soft Toothbrush (3 pack)",
    "5,460 ultra-fine filaments; gentle on gums after surgery.",
    "Manual toothbrushes",
)
SENSODYNE = _product(
    "sensodyne-pronamel",
    "Sensodyne Pronamel Daily Protection Toothpaste 75 ml",
    "1450 ppm fluoride toothpaste that helps protect against acid erosion.",
    "Toothpaste",
)
CORSODYL = _product(
    "corsodyl-af",
    "Corsodyl Alcohol-Free Mouthwash 500 ml",
    "0.2% chlorhexidine mouthwash for short-term use on your clinician's advice.",
    "Mouthwash",
    "Use for no more than 30 days unless advised.",
)
WHITENING_KIT = _product(
    "home-whitening-kit",
    "Professional Home Whitening Kit",
    "Custom-fitted trays made from your impressions with 10% carbamide peroxide gel; "
    "fitted and explained at the practice.",
    "Whitening",
    "Collect at reception; we will check the fit.",
)
WHITENING_TOP_UP = _product(
    "whitening-top-up",
    "Whitening Top-Up Gel (4 syringes)",
    "10% carbamide peroxide refills for existing whitening trays.",
    "Whitening",
)
MOUTHGUARD = _product(
    "sports-mouthguard",
    "Custom Sports Mouthguard",
    "Made to measure from your impressions, in your club colours.",
    "Mouthguards",
)
VOUCHER = _product(
    "hygienist-voucher",
    "Hygienist Appointment Gift Voucher",
    "A 30-minute hygienist appointment, emailed as a voucher code.",
    "Vouchers",
)

CATALOGUE = [
    IO9,
    PRO3,
    TEPE,
    WATERPIK,
    CURAPROX,
    SENSODYNE,
    CORSODYL,
    WHITENING_KIT,
    WHITENING_TOP_UP,
    MOUTHGUARD,
    VOUCHER,
]
BY_ID = {p.product_id: p for p in CATALOGUE}

PERIO = AppointmentFacts(("PERIO-SRP",), "Scaling and root planing for periodontal disease")
WHITENING = AppointmentFacts(("WHITENING",), "Patient would like whiter teeth")

RETAIL_WORDS = re.compile(
    r"trending|popular|customers also bought|also bought|best[- ]?seller|other patients|sales",
    re.IGNORECASE,
)


def _suggest(
    facts: AppointmentFacts,
    candidates: list[CandidateProduct] | None = None,
    limit: int = 20,
) -> list[EngineSuggestion]:
    return LocalSuggestionEngine().suggest(
        facts, CATALOGUE if candidates is None else candidates, limit=limit
    )


def _rank(suggestions: list[EngineSuggestion], product: CandidateProduct) -> int:
    ids = [s.product_id for s in suggestions]
    return ids.index(product.product_id)


def test_engine_satisfies_the_port_and_names_itself() -> None:
    engine: SuggestionEngine = LocalSuggestionEngine()
    assert engine.info.name == "local-tfidf"
    assert engine.info.version == "1"


def test_periodontal_appointment_ranks_interdental_and_electric_brushes_above_whitening() -> None:
    suggestions = _suggest(PERIO)
    ids = [s.product_id for s in suggestions]
    assert TEPE.product_id in ids
    assert IO9.product_id in ids
    top = {BY_ID[s.product_id].category for s in suggestions[:3]}
    assert top <= {"Interdental cleaning", "Electric toothbrushes"}
    for whitening in (WHITENING_KIT, WHITENING_TOP_UP):
        if whitening.product_id in ids:
            assert _rank(suggestions, whitening) > _rank(suggestions, TEPE)
            assert _rank(suggestions, whitening) > _rank(suggestions, IO9)
    # The iO 9's practice note mentions periodontal treatment: it outranks the other brushes.
    assert _rank(suggestions, IO9) < _rank(suggestions, PRO3)


def test_whitening_appointment_ranks_a_whitening_product_first() -> None:
    suggestions = _suggest(WHITENING)
    assert BY_ID[suggestions[0].product_id].category == "Whitening"
    assert {s.product_id for s in suggestions[:2]} == {
        WHITENING_KIT.product_id,
        WHITENING_TOP_UP.product_id,
    }
    assert "tooth whitening (WHITENING)" in suggestions[0].rationale


def test_only_candidates_at_most_limit_no_duplicates_best_first() -> None:
    candidates = [TEPE, WATERPIK, IO9, PRO3, WHITENING_KIT, TEPE]  # TePe offered twice
    suggestions = _suggest(PERIO, candidates, limit=3)
    ids = [s.product_id for s in suggestions]
    assert len(ids) == 3
    assert len(set(ids)) == 3
    assert set(ids) <= {c.product_id for c in candidates}
    scores = [s.score for s in suggestions]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(s, int) and 0 < s <= 1000 for s in scores)

    everything = _suggest(PERIO, candidates, limit=50)
    assert len({s.product_id for s in everything}) == len(everything) <= 5


def test_deterministic_across_calls_and_candidate_order() -> None:
    first = _suggest(PERIO)
    assert _suggest(PERIO) == first
    assert _suggest(PERIO, list(reversed(CATALOGUE))) == first
    assert LocalSuggestionEngine().suggest(PERIO, CATALOGUE, limit=20) == first


def test_ties_are_broken_by_name_then_id() -> None:
    # Same text, different names and ids: equal scores, ordered by name.
    a = _product("b-id", "Alpha Interdental Brush", "Interdental brush.", "Interdental cleaning")
    b = _product("a-id", "Beta Interdental Brush", "Interdental brush.", "Interdental cleaning")
    suggestions = _suggest(PERIO, [b, a])
    assert [s.product_id for s in suggestions] == [a.product_id, b.product_id]
    assert suggestions[0].score == suggestions[1].score

    same_name = [
        _product(key, "Interdental Brush", "Interdental brush.", "Interdental cleaning")
        for key in ("x", "y", "z")
    ]
    ids = [s.product_id for s in _suggest(PERIO, same_name)]
    assert ids == sorted(p.product_id for p in same_name)


def test_product_in_no_rule_and_with_no_shared_term_is_absent() -> None:
    ids = {s.product_id for s in _suggest(PERIO)}
    assert MOUTHGUARD.product_id not in ids
    assert VOUCHER.product_id not in ids
    assert WHITENING_KIT.product_id not in ids


def test_vouchers_are_never_suggested_by_a_rule() -> None:
    # A hygiene visit's rule covers brushes and toothpaste; a hygienist voucher shares no word
    # with the hygiene vocabulary and no rule lifts it.
    ids = {s.product_id for s in _suggest(AppointmentFacts(("SCALE-POLISH",), None))}
    assert TEPE.product_id in ids
    assert VOUCHER.product_id not in ids


def test_vouchers_are_never_suggested_even_when_the_words_match() -> None:
    # "hygienist appointment" is the voucher's own wording: still not a clinical product.
    facts = AppointmentFacts((), "Hygienist appointment voucher")
    assert VOUCHER.product_id not in {s.product_id for s in _suggest(facts)}


def test_rationale_names_the_matched_terms_and_the_rule() -> None:
    suggestions = {s.product_id: s for s in _suggest(PERIO)}
    io9 = suggestions[IO9.product_id].rationale
    assert '"periodontal"' in io9
    assert "appointment reason" in io9
    assert "Electric toothbrushes suits scaling and root planing (PERIO-SRP)" in io9
    tepe = suggestions[TEPE.product_id].rationale
    assert "Interdental cleaning suits scaling and root planing (PERIO-SRP)" in tepe
    assert tepe.endswith(".")

    # A rule alone is named as a rule; words alone as words.
    only_rule = suggestions[CORSODYL.product_id]
    assert only_rule.score == local.RULE_POINTS
    assert only_rule.rationale == (
        "The category Mouthwash suits scaling and root planing (PERIO-SRP)."
    )
    gums = _suggest(AppointmentFacts((), "Bleeding gums when brushing"), [CURAPROX, MOUTHGUARD])
    assert [s.product_id for s in gums] == [CURAPROX.product_id]
    assert gums[0].rationale == 'Matches "gum" in the appointment reason.'


def test_rationales_never_use_retail_discovery_language_or_promise() -> None:
    facts = [
        PERIO,
        WHITENING,
        AppointmentFacts(("ORTHO", "BRUXISM", "SCALE-POLISH"), "New braces; grinds at night"),
        AppointmentFacts((), "Trending popular best-seller that customers also bought"),
    ]
    for fact in facts:
        for suggestion in _suggest(fact):
            assert not RETAIL_WORDS.search(suggestion.rationale), suggestion.rationale
            assert not re.search(r"\b(will|guarantee\w*|promise\w*)\b", suggestion.rationale)


def test_retail_words_in_a_reason_match_nothing() -> None:
    trendy = _product("trendy", "Trending Popular Toothbrush", "A best seller.", "Gadgets")
    facts = AppointmentFacts((), "Trending, popular best seller")
    assert _suggest(facts, [trendy]) == []


@pytest.mark.parametrize(
    "facts",
    [AppointmentFacts((), None), AppointmentFacts((), "   "), AppointmentFacts(("  ",), "")],
)
def test_empty_facts_give_nothing(facts: AppointmentFacts) -> None:
    assert _suggest(facts) == []


def test_empty_candidates_or_no_room_give_nothing() -> None:
    assert _suggest(PERIO, []) == []
    assert _suggest(PERIO, limit=0) == []


def test_unknown_codes_are_plain_words_and_have_no_rule() -> None:
    facts = AppointmentFacts(("X-RAY", "ZZ_UNKNOWN", "WATER-FLOSSER"), None)
    suggestions = _suggest(facts)
    assert [s.product_id for s in suggestions] == [WATERPIK.product_id]
    assert "the treatment code WATER-FLOSSER" in suggestions[0].rationale
    assert "suits" not in suggestions[0].rationale
    assert _suggest(AppointmentFacts(("QQQ-ZZZ",), None)) == []


def test_codes_are_case_insensitive() -> None:
    assert _suggest(AppointmentFacts(("perio-srp",), None)) == _suggest(
        AppointmentFacts(("PERIO-SRP",), None)
    )


def test_stop_word_only_reason_does_not_crash() -> None:
    assert _suggest(AppointmentFacts((), "the and of to it is")) == []
    # With a treatment code the rules still apply.
    ids = {s.product_id for s in _suggest(AppointmentFacts(("WHITENING",), "and the of"))}
    assert ids == {WHITENING_KIT.product_id, WHITENING_TOP_UP.product_id}


def test_stop_word_only_catalogue_does_not_crash() -> None:
    # scikit-learn refuses to fit an empty vocabulary (every word a stop word); no term can
    # match then, and neither product is in a rule's category.
    blank = _product("blank", "The", "And of the", "")
    other = _product("other", "It", "Is", "")
    assert _suggest(PERIO, [blank, other]) == []
    assert _suggest(AppointmentFacts((), "the"), [blank]) == []


def test_other_catalogues_categories_are_recognised_by_keyword() -> None:
    assert canonical_category("INTERDENTAL CLEANING") == "Interdental cleaning"
    assert canonical_category("Interdental brushes & floss") == "Interdental cleaning"
    assert canonical_category("Power toothbrushes") == "Electric toothbrushes"
    assert canonical_category("Electric toothbrush heads") == "Brush heads"
    assert canonical_category("Gift cards") == "Vouchers"
    assert canonical_category("Digital") == "Vouchers"
    assert canonical_category("Snacks") is None
    floss = _product("floss", "Expanding floss", "Waxed.", "Interdental brushes & floss")
    suggestions = _suggest(AppointmentFacts(("BRIDGE",), None), [floss, MOUTHGUARD])
    assert [s.product_id for s in suggestions] == [floss.product_id]


def test_every_vocabulary_category_is_a_known_category() -> None:
    known = {
        "Electric toothbrushes",
        "Manual toothbrushes",
        "Interdental cleaning",
        "Brush heads",
        "Toothpaste",
        "Mouthwash",
        "Whitening",
        "Mouthguards",
    }
    for code, treatment in TREATMENTS.items():
        assert set(treatment.categories) <= known, code
        assert treatment.label, code
        assert treatment.words, code


def test_unexpected_failures_become_suggestion_engine_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(local, "_relevance", broken)
    with pytest.raises(SuggestionEngineError):
        _suggest(PERIO)
