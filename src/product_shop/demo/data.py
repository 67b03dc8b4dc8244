"""The demo world: two practices, their staff and patients, and a realistic dental catalogue.

Ids are derived (uuid5) so they are the same on every machine and every run.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

_NS = uuid.UUID("5b7f7d3c-2f4e-4a57-9a34-6f1c0b7e0d11")


def demo_id(kind: str, key: str) -> uuid.UUID:
    return uuid.uuid5(_NS, f"{kind}:{key}")


@dataclass(frozen=True, slots=True)
class DemoPractice:
    slug: str
    name: str
    town: str

    @property
    def practice_id(self) -> uuid.UUID:
        return demo_id("practice", self.slug)


@dataclass(frozen=True, slots=True)
class DemoUser:
    handle: str
    name: str
    role: str
    practice: DemoPractice | None

    @property
    def subject(self) -> str:
        if self.role == "service":
            return self.handle
        return str(demo_id("user", self.handle))

    @property
    def patient_id(self) -> str | None:
        return self.subject if self.role == "patient" else None


@dataclass(frozen=True, slots=True)
class DemoProduct:
    key: str
    name: str
    description: str
    category: str
    fulfilment_type: str
    cost_price_minor: int
    # Per practice slug: (retail_price_minor, practice_note, visible, in_clinic_stock_available).
    offers: dict[str, tuple[int, str | None, bool, bool]]
    availability_status: str = "available"

    @property
    def imagery_ref(self) -> str:
        return f"catalogue-images/{self.key}.jpg"


HARBOUR = DemoPractice("harbour", "Harbour Dental Care", "Bristol")
MEADOWBANK = DemoPractice("meadowbank", "Meadowbank Family Dentistry", "Leeds")
PRACTICES = (HARBOUR, MEADOWBANK)

_STAFF = {
    HARBOUR: (
        ("clinician", "Dr Priya Raman"),
        ("practice_admin", "Sarah Whitfield"),
        ("finance", "Tom Okafor"),
        ("staff", "Jess Morgan"),
    ),
    MEADOWBANK: (
        ("clinician", "Dr Alistair Grant"),
        ("practice_admin", "Helen Ashworth"),
        ("finance", "Marek Nowak"),
        ("staff", "Chloe Barnes"),
    ),
}
_PATIENTS = {
    HARBOUR: ("Amelia Hughes", "Oliver Bennett", "Isla Thompson", "George Patel", "Freya Collins"),
    MEADOWBANK: ("Harry Walsh", "Sophie Clarke", "Noah Ahmed", "Emily Fraser", "Jack Robinson"),
}


def _users() -> tuple[DemoUser, ...]:
    users: list[DemoUser] = [
        DemoUser(
            "primoro-catalogue", "Naomi Clarke (Primoro catalogue team)", "catalogue_admin", None
        ),
        DemoUser("hygiene-subscriptions", "Hygiene Subscriptions module", "service", None),
        DemoUser("primoro-operations", "Ravi Shah (Primoro operations)", "platform_operator", None),
    ]
    for practice in PRACTICES:
        for role, name in _STAFF[practice]:
            users.append(
                DemoUser(f"{practice.slug}-{role.replace('_', '-')}", name, role, practice)
            )
        for name in _PATIENTS[practice]:
            first = name.split()[0].lower()
            users.append(DemoUser(f"{practice.slug}-patient-{first}", name, "patient", practice))
    return tuple(users)


USERS = _users()
CATALOGUE_ADMIN = USERS[0]

H, M = HARBOUR.slug, MEADOWBANK.slug

PRODUCTS: tuple[DemoProduct, ...] = (
    DemoProduct(
        "oralb-io9",
        "Oral-B iO Series 9 Electric Toothbrush",
        "Magnetic drive, AI brushing recognition across 16 zones, pressure sensor and 7 modes.",
        "Electric toothbrushes",
        "Drop-Ship",
        15999,
        {
            H: (22999, "Recommended after periodontal treatment.", True, False),
            M: (23999, None, True, False),
        },
    ),
    DemoProduct(
        "sonicare-9000",
        "Philips Sonicare DiamondClean 9000",
        "Sonic toothbrush with 4 modes, 3 intensities and a pressure sensor; charging glass.",
        "Electric toothbrushes",
        "Drop-Ship",
        13999,
        {H: (19999, None, True, False)},
    ),
    DemoProduct(
        "oralb-pro3",
        "Oral-B Pro 3 3000 Electric Toothbrush",
        "Round oscillating head, visible pressure control and a 2-minute timer.",
        "Electric toothbrushes",
        "Drop-Ship",
        3999,
        {H: (5999, None, True, False), M: (5499, "Our everyday recommendation.", True, False)},
    ),
    DemoProduct(
        "tepe-original-mixed",
        "TePe Interdental Brushes Original, Mixed Pack (8)",
        "Eight brushes in four sizes; ask your hygienist which sizes suit your gaps.",
        "Interdental cleaning",
        "Drop-Ship",
        350,
        {
            H: (599, "Use the sizes your hygienist marked for you.", True, False),
            M: (650, None, True, False),
        },
    ),
    DemoProduct(
        "waterpik-cordless",
        "Waterpik Cordless Advanced Water Flosser",
        "Rechargeable water flosser with 3 pressure settings, for bridges, implants and braces.",
        "Interdental cleaning",
        "Drop-Ship",
        5499,
        {H: (7999, None, True, False), M: (8499, "Ideal around implants.", True, False)},
    ),
    DemoProduct(
        "curaprox-5460",
        "Curaprox CS 5460 Ultra Soft Toothbrush (3 pack)",
        "5,460 ultra-fine filaments; gentle on gums after surgery.",
        "Manual toothbrushes",
        "Drop-Ship",
        900,
        {H: (1499, None, True, False), M: (1399, None, True, False)},
    ),
    DemoProduct(
        "sensodyne-pronamel",
        "Sensodyne Pronamel Daily Protection Toothpaste 75 ml",
        "1450 ppm fluoride toothpaste that helps protect against acid erosion.",
        "Toothpaste",
        "Drop-Ship",
        350,
        {H: (599, None, True, False), M: (575, None, True, False)},
    ),
    DemoProduct(
        "corsodyl-af",
        "Corsodyl Alcohol-Free Mouthwash 500 ml",
        "0.2% chlorhexidine mouthwash for short-term use on your clinician's advice.",
        "Mouthwash",
        "Drop-Ship",
        300,
        {H: (549, "Use for no more than 30 days unless advised.", True, False)},
    ),
    DemoProduct(
        "oralb-io-heads",
        "Oral-B iO Ultimate Clean Replacement Heads (4 pack)",
        "Genuine iO brush heads; replace every three months.",
        "Brush heads",
        "Drop-Ship",
        1800,
        {H: (2699, None, True, False), M: (2799, None, True, False)},
    ),
    DemoProduct(
        "sonicare-c3-heads",
        "Philips Sonicare C3 Premium Plaque Control Heads (4 pack)",
        "Removes up to 10x more plaque than a manual toothbrush.",
        "Brush heads",
        "Drop-Ship",
        2200,
        {H: (3299, None, False, False)},
    ),
    DemoProduct(
        "home-whitening-kit",
        "Professional Home Whitening Kit",
        "Custom-fitted trays made from your impressions with 10% carbamide peroxide gel; "
        "fitted and explained at the practice.",
        "Whitening",
        "In-Clinic",
        9500,
        {
            H: (24900, "Collect at reception; we will check the fit.", True, True),
            M: (27500, None, True, True),
        },
    ),
    DemoProduct(
        "sports-mouthguard",
        "Custom Sports Mouthguard",
        "Made to measure from your impressions, in your club colours.",
        "Mouthguards",
        "In-Clinic",
        3000,
        {H: (8500, None, True, True), M: (9000, "Allow two weeks for the lab.", True, True)},
    ),
    DemoProduct(
        "whitening-top-up",
        "Whitening Top-Up Gel (4 syringes)",
        "10% carbamide peroxide refills for existing whitening trays.",
        "Whitening",
        "In-Clinic",
        1200,
        {H: (3500, None, True, False), M: (3900, None, True, True)},
    ),
    DemoProduct(
        "hygienist-voucher",
        "Hygienist Appointment Gift Voucher",
        "A 30-minute hygienist appointment, emailed as a voucher code.",
        "Vouchers",
        "Digital",
        0,
        {H: (6000, None, True, False), M: (6500, None, True, False)},
    ),
    DemoProduct(
        "smile-consultation-voucher",
        "Smile Makeover Consultation Voucher",
        "A cosmetic consultation with photographs and a written plan, emailed as a voucher code.",
        "Vouchers",
        "Digital",
        0,
        {M: (4500, None, True, False)},
        availability_status="unavailable",
    ),
)


@dataclass(frozen=True, slots=True)
class DemoAppointment:
    """An appointment Appointment Manager's simulator tells the demo ended (spec §11.1), so staff
    find AI suggestions waiting for their decision. The id is stable: a restarted demo sends the
    same event again and Product Shop records it once."""

    key: str
    patient: str  # a patient's handle
    clinician: str  # a clinician's handle
    treatment_codes: tuple[str, ...]
    reason: str


APPOINTMENTS: tuple[DemoAppointment, ...] = (
    DemoAppointment(
        "harbour-amelia-perio",
        "harbour-patient-amelia",
        "harbour-clinician",
        ("PERIO-SRP",),
        "Scaling and root planing, lower molars; bleeding gums between visits.",
    ),
    DemoAppointment(
        "harbour-oliver-bruxism",
        "harbour-patient-oliver",
        "harbour-clinician",
        ("BRUXISM", "CHECKUP"),
        "Wear facets on the upper incisors; grinds at night.",
    ),
    DemoAppointment(
        "meadowbank-harry-whitening",
        "meadowbank-patient-harry",
        "meadowbank-clinician",
        ("WHITENING",),
        "Whitening consultation after hygiene visit; mild sensitivity.",
    ),
)


def user_by_handle(handle: str) -> DemoUser:
    return next(u for u in USERS if u.handle == handle)
