"""The verified-token cache: it saves RSA checks, and never extends what a token allows.

An entry lives until the token's `exp` (+ leeway) or CACHE_SECONDS, whichever is sooner; a hit
re-checks `exp` against the wall clock; failures are never remembered; at most CACHE_ENTRIES
tokens are held. Both clocks are injected, so nothing here sleeps.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from product_shop.access import tokens
from product_shop.access.actor import Role
from product_shop.access.demo_idp import KeyPair
from product_shop.access.tokens import TokenVerifier
from product_shop.config import DEFAULT_AUDIENCE, DEFAULT_ISSUER
from product_shop.core.errors import Forbidden, InvalidToken
from tests.conftest import TokenFactory

PRACTICE = uuid.uuid4()
START = 1_000.0  # the injected monotonic clock's reading when a test begins


@dataclass
class Clocks:
    """A monotonic and a wall clock the test moves by hand."""

    monotonic: float
    wall: float

    def advance(self, seconds: float, *, wall: bool = True) -> None:
        self.monotonic += seconds
        if wall:
            self.wall += seconds


@dataclass
class Decodes:
    """Counts the signature checks (`jwt.decode` calls) the verifier makes."""

    calls: int = 0


@pytest.fixture
def now() -> int:
    """A whole second of real time: tokens are minted at it and the wall clock starts there.

    `jwt.decode` checks `exp`/`nbf` against the real clock, so tokens must be valid in real
    time too; the injected wall clock only drives the cache's own re-check.
    """
    return int(time.time())


@pytest.fixture
def clocks(now: int) -> Clocks:
    return Clocks(monotonic=START, wall=float(now))


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> Decodes:
    counter = Decodes()
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        counter.calls += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr("product_shop.access.tokens.jwt.decode", counting_decode)
    return counter


MakeVerifier = Callable[..., TokenVerifier]


@pytest.fixture
def make_verifier(key_pair: KeyPair, clocks: Clocks) -> MakeVerifier:
    def factory(leeway_seconds: int = 0) -> TokenVerifier:
        return TokenVerifier(
            issuer=DEFAULT_ISSUER,
            audience=DEFAULT_AUDIENCE,
            algorithms=["RS256"],
            public_key=key_pair.public_pem,
            leeway_seconds=leeway_seconds,
            monotonic=lambda: clocks.monotonic,
            wall_clock=lambda: clocks.wall,
        )

    return factory


@pytest.fixture
def verifier(make_verifier: MakeVerifier) -> TokenVerifier:
    return make_verifier()


@pytest.fixture
def token(make_token: TokenFactory, now: int) -> str:
    """A patient token minted at `now`, good for an hour."""
    return make_token(role="patient", practice_id=PRACTICE, now=datetime.fromtimestamp(now, UTC))


def _cache(verifier: TokenVerifier) -> dict[str, Any]:
    cache: dict[str, Any] = verifier._verified
    return cache


# ---- a. remembered within the window --------------------------------------------------------


def test_a_verified_token_is_not_verified_again_within_the_window(
    verifier: TokenVerifier, token: str, decodes: Decodes, clocks: Clocks
) -> None:
    first = verifier.verify(token)
    clocks.advance(30)
    second = verifier.verify(token)

    assert decodes.calls == 1
    assert second == first
    assert list(_cache(verifier)) == [token]


# ---- b. CACHE_SECONDS bounds every entry ----------------------------------------------------


def test_after_cache_seconds_the_token_is_verified_again(
    verifier: TokenVerifier, token: str, decodes: Decodes, clocks: Clocks
) -> None:
    verifier.verify(token)
    clocks.advance(tokens.CACHE_SECONDS - 0.001)
    verifier.verify(token)
    assert decodes.calls == 1

    clocks.advance(0.001)  # exactly CACHE_SECONDS after it was remembered
    verifier.verify(token)
    assert decodes.calls == 2

    verifier.verify(token)  # remembered afresh by the second check
    assert decodes.calls == 2


def test_the_cache_window_follows_the_monotonic_clock_not_the_wall_clock(
    verifier: TokenVerifier, token: str, decodes: Decodes, clocks: Clocks
) -> None:
    """A wall clock stepped backwards (NTP) must not keep an entry alive past CACHE_SECONDS."""
    verifier.verify(token)
    clocks.wall -= 3_600
    clocks.advance(tokens.CACHE_SECONDS, wall=False)
    verifier.verify(token)
    assert decodes.calls == 2


# ---- c. a hit re-checks exp against the wall clock -------------------------------------------


def test_a_cached_token_whose_exp_passes_is_refused_as_expired(
    verifier: TokenVerifier, make_token: TokenFactory, now: int, decodes: Decodes, clocks: Clocks
) -> None:
    # The entry outlives the token only if the wall clock runs ahead of the monotonic one (a
    # stepped clock, a suspended VM): the re-check on a hit is what refuses it then.
    short = make_token(
        role="patient",
        practice_id=PRACTICE,
        now=datetime.fromtimestamp(now, UTC),
        ttl=timedelta(seconds=20),
    )
    verifier.verify(short)
    clocks.wall = now + 20 + 1  # past exp + leeway (0); the entry is still live (monotonic)

    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(short)
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(short)
    # Refused by the cache itself: `jwt.decode` (real clock) would still have accepted it.
    assert decodes.calls == 1


def test_the_expiry_recheck_on_a_hit_honours_the_leeway(
    make_verifier: MakeVerifier, token: str, now: int, decodes: Decodes, clocks: Clocks
) -> None:
    verifier = make_verifier(leeway_seconds=30)
    verifier.verify(token)
    exp = now + 3_600

    clocks.wall = exp + 29.5  # past exp, within the leeway: still good
    assert verifier.verify(token).role is Role.PATIENT
    clocks.wall = exp + 30.5  # past exp + leeway
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)
    assert decodes.calls == 1


# ---- d. failures are never remembered -------------------------------------------------------


def test_a_forged_token_is_checked_every_time_and_never_cached(
    verifier: TokenVerifier,
    make_token: TokenFactory,
    other_key_pair: KeyPair,
    now: int,
    decodes: Decodes,
) -> None:
    forged = make_token(
        role="patient",
        practice_id=PRACTICE,
        now=datetime.fromtimestamp(now, UTC),
        private_pem=other_key_pair.private_pem,
    )
    for _ in range(2):
        with pytest.raises(InvalidToken, match="not valid"):
            verifier.verify(forged)

    assert decodes.calls == 2
    assert _cache(verifier) == {}


def test_a_refused_token_does_not_make_a_good_one_cached_or_refused(
    verifier: TokenVerifier,
    make_token: TokenFactory,
    other_key_pair: KeyPair,
    token: str,
    decodes: Decodes,
) -> None:
    forged = make_token(
        role="patient", practice_id=PRACTICE, private_pem=other_key_pair.private_pem
    )
    with pytest.raises(InvalidToken):
        verifier.verify(forged)
    verifier.verify(token)
    verifier.verify(token)
    with pytest.raises(InvalidToken):
        verifier.verify(forged)

    assert decodes.calls == 3  # forged, good, forged
    assert list(_cache(verifier)) == [token]


# ---- e. a short-lived token is cached no longer than its life --------------------------------


def test_a_token_with_a_short_life_is_cached_no_longer_than_its_life(
    verifier: TokenVerifier, make_token: TokenFactory, decodes: Decodes, clocks: Clocks
) -> None:
    # Minted now, not at fixture time: the first verify checks `exp` in real time too, and a
    # loaded machine may spend seconds setting fixtures up.
    minted = int(time.time())
    clocks.wall = float(minted)
    short = make_token(
        role="patient",
        practice_id=PRACTICE,
        now=datetime.fromtimestamp(minted, UTC),
        ttl=timedelta(seconds=5),
    )
    verifier.verify(short)
    clocks.advance(4.9, wall=False)  # only the monotonic clock: the entry's own deadline
    verifier.verify(short)
    assert decodes.calls == 1

    clocks.advance(1.1, wall=False)  # 6 s after it was remembered: past its 5 s life
    try:
        verifier.verify(short)  # checked again (accepted while real time is short of exp)
    except InvalidToken as exc:  # a slow machine may have reached exp in real time
        refusal: str | None = exc.detail
    else:
        refusal = None
    assert refusal in (None, "The access token has expired.")
    assert decodes.calls == 2


def test_a_short_lived_token_is_cached_until_exp_plus_leeway(
    make_verifier: MakeVerifier,
    make_token: TokenFactory,
    now: int,
    decodes: Decodes,
    clocks: Clocks,
) -> None:
    verifier = make_verifier(leeway_seconds=10)
    short = make_token(
        role="patient",
        practice_id=PRACTICE,
        now=datetime.fromtimestamp(now, UTC),
        ttl=timedelta(seconds=5),
    )
    verifier.verify(short)
    clocks.advance(14.9, wall=False)
    verifier.verify(short)
    assert decodes.calls == 1

    clocks.advance(0.1, wall=False)  # 15 s = 5 s of life + 10 s of leeway
    verifier.verify(short)
    assert decodes.calls == 2


def test_a_token_whose_exp_plus_leeway_is_already_behind_the_wall_clock_is_not_cached(
    make_verifier: MakeVerifier,
    make_token: TokenFactory,
    now: int,
    decodes: Decodes,
    clocks: Clocks,
) -> None:
    verifier = make_verifier(leeway_seconds=30)
    late = make_token(
        role="patient",
        practice_id=PRACTICE,
        now=datetime.fromtimestamp(now - 60, UTC),
        ttl=timedelta(seconds=40),  # exp = now - 20: accepted only thanks to the leeway
    )
    clocks.wall = now + 10.0  # the cache thinks exp + leeway is already behind it
    verifier.verify(late)

    assert _cache(verifier) == {}
    verifier.verify(late)
    assert decodes.calls == 2


# ---- f. bounded size ------------------------------------------------------------------------


def test_the_cache_never_holds_more_than_cache_entries_and_evicts_the_oldest(
    monkeypatch: pytest.MonkeyPatch,
    verifier: TokenVerifier,
    make_token: TokenFactory,
    now: int,
    decodes: Decodes,
) -> None:
    monkeypatch.setattr(tokens, "CACHE_ENTRIES", 3)
    minted = [
        make_token(role="patient", practice_id=PRACTICE, now=datetime.fromtimestamp(now, UTC))
        for _ in range(5)
    ]
    assert len(set(minted)) == 5
    for token in minted:
        verifier.verify(token)
        assert len(_cache(verifier)) <= 3

    assert decodes.calls == 5
    assert list(_cache(verifier)) == minted[2:]

    for token in minted[2:]:  # the three newest are still remembered
        verifier.verify(token)
    assert decodes.calls == 5

    verifier.verify(minted[0])  # the oldest was evicted: checked again
    assert decodes.calls == 6
    assert len(_cache(verifier)) == 3
    assert list(_cache(verifier)) == [*minted[3:], minted[0]]


# ---- g. a hit gives the same Actor as a check ----------------------------------------------


@pytest.mark.parametrize(
    ("role", "practice", "mfa"),
    [
        ("patient", PRACTICE, True),
        ("practice_admin", PRACTICE, False),
        ("catalogue_admin", None, False),
    ],
)
def test_cached_claims_produce_the_same_actor_as_an_uncached_verify(
    make_verifier: MakeVerifier,
    make_token: TokenFactory,
    now: int,
    decodes: Decodes,
    role: str,
    practice: uuid.UUID | None,
    mfa: bool,
) -> None:
    subject = str(uuid.uuid4())
    token = make_token(
        role=role,
        subject=subject,
        practice_id=practice,
        name="Penny",
        mfa=mfa,
        now=datetime.fromtimestamp(now, UTC),
    )
    verifier = make_verifier()
    uncached = verifier.verify(token)
    cached = verifier.verify(token)
    fresh = make_verifier().verify(token)  # another verifier, empty cache

    assert decodes.calls == 2  # `cached` came from the cache
    assert cached == uncached == fresh
    assert cached.role is Role(role)
    assert cached.actor_id == subject
    assert cached.practice_id == practice
    assert cached.name == "Penny"
    assert cached.mfa is mfa
    assert cached.auth_time == datetime.fromtimestamp(now, UTC)
    if role == "patient":
        assert cached.patient_id == uuid.UUID(subject)


def test_a_cached_token_with_an_unknown_role_is_still_forbidden_on_every_call(
    verifier: TokenVerifier, make_token: TokenFactory, now: int, decodes: Decodes
) -> None:
    """A well-signed token whose role has no access is cached, but the role check still runs."""
    token = make_token(role="superuser", practice_id=PRACTICE, now=datetime.fromtimestamp(now, UTC))
    for _ in range(2):
        with pytest.raises(Forbidden):
            verifier.verify(token)
    assert decodes.calls == 1


def test_the_default_verifier_caches_with_the_real_clocks(
    key_pair: KeyPair, token: str, decodes: Decodes
) -> None:
    verifier = TokenVerifier(
        issuer=DEFAULT_ISSUER,
        audience=DEFAULT_AUDIENCE,
        algorithms=["RS256"],
        public_key=key_pair.public_pem,
    )
    assert verifier.verify(token) == verifier.verify(token)
    assert decodes.calls == 1


def test_a_cached_token_is_refused_at_the_same_instant_pyjwt_would_refuse_it(
    verifier: TokenVerifier, token: str, now: int, clocks: Clocks
) -> None:
    verifier.verify(token)
    clocks.wall = float(now + 3_600)  # exactly exp (+ leeway 0); the entry is still live
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(token)


# ---- verify_cached: the event loop's lookup (web/deps.current_actor) ------------------------


def test_verify_cached_answers_only_from_the_cache_and_never_verifies(
    verifier: TokenVerifier, token: str, decodes: Decodes, clocks: Clocks
) -> None:
    """The request dependency runs on the event loop: a miss must say so (None) without any
    signature check or key fetch, so the caller verifies in the thread pool instead."""
    assert verifier.verify_cached(token) is None
    assert decodes.calls == 0
    assert _cache(verifier) == {}

    actor = verifier.verify(token)
    assert verifier.verify_cached(token) == actor
    assert decodes.calls == 1

    clocks.advance(tokens.CACHE_SECONDS)  # the entry's window is over: a miss again
    assert verifier.verify_cached(token) is None
    assert decodes.calls == 1


def test_verify_cached_refuses_a_remembered_token_once_it_has_expired(
    make_token: TokenFactory, verifier: TokenVerifier, now: int, clocks: Clocks
) -> None:
    short = make_token(
        role="patient",
        practice_id=PRACTICE,
        now=datetime.fromtimestamp(now, UTC),
        ttl=timedelta(seconds=120),
    )
    verifier.verify(short)
    clocks.advance(30, wall=False)
    clocks.wall = now + 120  # exp reached on the wall clock, still inside the cache window
    with pytest.raises(InvalidToken):
        verifier.verify_cached(short)
