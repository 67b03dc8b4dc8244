"""The built-in treatment vocabulary of the local suggestion engine (local.py).

Appointment Manager sends treatment codes, not prose, and a code such as PERIO-SRP shares no words
with a product description. This table turns each code a dental team uses into what the engine
can match and explain:

- a plain-English label, used only in rationales ("scaling and root planing (PERIO-SRP)");
- related words a clinician would use about the treatment, added to the appointment's query so
  that TF-IDF relevance can find "gum", "plaque" or "braces" in the catalogue (the label is not
  added: words such as "treatment" in it would match products for no clinical reason);
- the product categories a clinician would recognise as suiting the treatment (the category
  rules: a product in one of them gets a fixed boost).

It is deliberately small and reviewable: a clinician can read it and disagree with a line, and a
developer can change that line. Codes missing from the table are used as plain words and have no
rule. Gift vouchers are in no treatment's categories: they are never suggested by a rule, because
a rule is a clinical judgement and a voucher is not a clinical product.

Category names are the demo catalogue's ("Interdental cleaning", "Electric toothbrushes", ...).
Another catalogue may name its categories differently, so `canonical_category` also recognises a
category by keyword ("Interdental brushes & floss" is interdental cleaning)."""

from __future__ import annotations

from dataclasses import dataclass

ELECTRIC_TOOTHBRUSHES = "Electric toothbrushes"
MANUAL_TOOTHBRUSHES = "Manual toothbrushes"
INTERDENTAL_CLEANING = "Interdental cleaning"
BRUSH_HEADS = "Brush heads"
TOOTHPASTE = "Toothpaste"
MOUTHWASH = "Mouthwash"
WHITENING = "Whitening"
MOUTHGUARDS = "Mouthguards"
VOUCHERS = "Vouchers"


@dataclass(frozen=True, slots=True)
class Treatment:
    """One treatment code's entry: what to call it, what words go with it, and which product
    categories suit it."""

    label: str
    words: tuple[str, ...]
    categories: tuple[str, ...]


TREATMENTS: dict[str, Treatment] = {
    "PERIO-SRP": Treatment(
        "scaling and root planing",
        (
            "periodontal",
            "periodontitis",
            "gum",
            "pocket",
            "deep cleaning",
            "root planing",
            "plaque",
            "tartar",
            "bleeding",
            "interdental",
        ),
        (INTERDENTAL_CLEANING, ELECTRIC_TOOTHBRUSHES, MOUTHWASH),
    ),
    "SCALE-POLISH": Treatment(
        "a scale and polish",
        ("hygiene visit", "scale", "polish", "plaque", "tartar", "stain", "gum"),
        (ELECTRIC_TOOTHBRUSHES, MANUAL_TOOTHBRUSHES, INTERDENTAL_CLEANING, BRUSH_HEADS, TOOTHPASTE),
    ),
    "WHITENING": Treatment(
        "tooth whitening",
        ("whitening", "whiten", "bleaching", "stain", "shade", "carbamide peroxide", "tray"),
        (WHITENING,),
    ),
    "IMPLANT": Treatment(
        "a dental implant",
        ("implant", "peri-implant", "gum", "interdental", "water flosser"),
        (INTERDENTAL_CLEANING, ELECTRIC_TOOTHBRUSHES, MANUAL_TOOTHBRUSHES),
    ),
    "BRIDGE": Treatment(
        "a dental bridge",
        ("bridge", "pontic", "floss", "interdental", "water flosser"),
        (INTERDENTAL_CLEANING,),
    ),
    "ORTHO": Treatment(
        "orthodontic braces or aligners",
        ("orthodontic", "braces", "aligner", "bracket", "wire", "retainer", "water flosser"),
        (INTERDENTAL_CLEANING, ELECTRIC_TOOTHBRUSHES, TOOTHPASTE),
    ),
    "EXTRACTION": Treatment(
        "a tooth extraction",
        ("extraction", "socket", "healing", "soft", "gentle"),
        (MANUAL_TOOTHBRUSHES, MOUTHWASH),
    ),
    "SURGERY": Treatment(
        "oral surgery",
        ("surgery", "surgical", "healing", "soft", "gentle"),
        (MANUAL_TOOTHBRUSHES, MOUTHWASH),
    ),
    "SENSITIVITY": Treatment(
        "tooth sensitivity",
        ("sensitivity", "sensitive", "enamel", "erosion", "desensitising", "fluoride"),
        (TOOTHPASTE,),
    ),
    "FLUORIDE": Treatment(
        "a fluoride treatment",
        ("fluoride", "varnish", "enamel", "decay"),
        (TOOTHPASTE, MOUTHWASH),
    ),
    "BRUXISM": Treatment(
        "teeth grinding",
        ("bruxism", "grinding", "clenching", "night guard", "mouthguard"),
        (MOUTHGUARDS,),
    ),
    "SPORTS-GUARD": Treatment(
        "a sports mouthguard",
        ("sports", "mouthguard", "contact sport", "impact"),
        (MOUTHGUARDS,),
    ),
    "CARIES": Treatment(
        "fillings and decay risk",
        ("caries", "decay", "cavity", "filling", "fluoride", "enamel"),
        (TOOTHPASTE, MOUTHWASH, INTERDENTAL_CLEANING),
    ),
    "GINGIVITIS": Treatment(
        "gum inflammation",
        ("gingivitis", "gum", "bleeding", "inflammation", "plaque"),
        (INTERDENTAL_CLEANING, ELECTRIC_TOOTHBRUSHES, MOUTHWASH),
    ),
    "DRY-MOUTH": Treatment(
        "dry mouth",
        ("dry mouth", "xerostomia", "saliva", "alcohol-free", "moisturising"),
        (MOUTHWASH, TOOTHPASTE),
    ),
    # A routine check-up indicates no product by itself: the reason text decides.
    "CHECKUP": Treatment(
        "a routine check-up",
        ("checkup", "examination", "routine"),
        (),
    ),
}

# Recognising another catalogue's category names: the first entry whose keywords occur in the
# (lower-cased) category wins, so the more specific come first ("Electric toothbrush heads" is
# brush heads, "Whitening toothpaste" is whitening).
_CATEGORY_KEYWORDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (VOUCHERS, ("voucher", "gift", "digital")),
    (BRUSH_HEADS, ("brush head", "replacement head", "refill head", "heads")),
    (INTERDENTAL_CLEANING, ("interdental", "floss")),
    (MOUTHGUARDS, ("mouthguard", "mouth guard", "night guard", "sports guard")),
    (WHITENING, ("whitening", "bleaching")),
    (MOUTHWASH, ("mouthwash", "mouth wash", "mouth rinse", "rinse")),
    (TOOTHPASTE, ("toothpaste", "dentifrice")),
    (ELECTRIC_TOOTHBRUSHES, ("electric", "sonic", "power toothbrush")),
    (MANUAL_TOOTHBRUSHES, ("manual",)),
)

_CANONICAL = {name.casefold(): name for name, _ in _CATEGORY_KEYWORDS}

# Categories no rule ever boosts, whatever the table above says.
NEVER_BY_RULE = frozenset({VOUCHERS})


def canonical_category(category: str) -> str | None:
    """The vocabulary's name for a catalogue category (exact, case-insensitive, else by keyword),
    or None when it is none of them."""
    folded = " ".join(category.casefold().split())
    if folded in _CANONICAL:
        return _CANONICAL[folded]
    for name, keywords in _CATEGORY_KEYWORDS:
        if any(keyword in folded for keyword in keywords):
            return name
    return None


def treatment_for(code: str) -> Treatment | None:
    """The vocabulary entry for a treatment code (case and surrounding space ignored)."""
    return TREATMENTS.get(code.strip().upper())
