"""The sign-in pages a person sees: choose a demo user, pass the TOTP step, errors, signed out.

Plain server-rendered HTML with every value escaped, no script and no external assets, so they
work under a strict CSP and a screen reader: one labelled control per choice, errors announced
(`role="alert"`) and tied to the field they are about."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from product_shop.simulators.access.state import AccessUser

TITLE = "Sign in to Primoro (demo)"
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1b1b1b}"
    "fieldset{border:1px solid #767676;padding:.5rem 1rem}"
    ".choice{margin:.5rem 0}"
    ".error{color:#a4000f;font-weight:600}"
    ".hint{background:#fff4ce;padding:.25rem .5rem}"
    "button{font-size:1rem;padding:.4rem 1.2rem;margin-top:1rem}"
    "input[type=text]{font-size:1.2rem;width:8rem}"
)


def _layout(title: str, content: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><main>{content}</main></body></html>\n"
    )


def _error(message: str | None, element_id: str = "error") -> str:
    if not message:
        return ""
    return f'<p id="{element_id}" class="error" role="alert">{escape(message)}</p>'


def role_label(role: str) -> str:
    return role.replace("_", " ").capitalize()


def practice_label(user: AccessUser) -> str:
    if user.practice_name:
        return user.practice_name
    return user.practice_id or "All practices"


def picker_page(
    action: str, pending_id: str, users: Sequence[AccessUser], error: str | None = None
) -> str:
    """One form: a labelled radio button per user (name, role, practice)."""
    choices = []
    for index, user in enumerate(users):
        control = f"user-{index}"
        checked = " checked" if index == 0 else ""
        choices.append(
            f'<div class="choice"><input type="radio" id="{control}" name="handle" '
            f'value="{escape(user.handle)}" required{checked}> '
            f'<label for="{control}"><strong>{escape(user.name)}</strong>, '
            f"{escape(role_label(user.role))}, {escape(practice_label(user))}</label></div>"
        )
    content = (
        f"<h1>{escape(TITLE)}</h1>"
        "<p>This is the Access Manager simulator: choose a demo user to sign in as. "
        "No password is asked.</p>"
        f"{_error(error)}"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="pending" value="{escape(pending_id)}">'
        "<fieldset><legend>Sign in as</legend>"
        f"{''.join(choices) or '<p>No users are configured.</p>'}"
        "</fieldset>"
        '<button type="submit">Sign in</button></form>'
    )
    return _layout(TITLE, content)


def mfa_page(
    action: str,
    pending_id: str,
    user: AccessUser,
    error: str | None = None,
    hint: str | None = None,
) -> str:
    """The TOTP step: one labelled code field (a phone's one-time-code autofill, numeric)."""
    described = "code-help error" if error else "code-help"
    invalid = ' aria-invalid="true"' if error else ""
    demo_hint = (
        f'<p class="hint">Demo hint: the current code is <strong>{escape(hint)}</strong>.</p>'
        if hint
        else ""
    )
    content = (
        f"<h1>{escape(TITLE)}</h1>"
        f"<p>Signing in as <strong>{escape(user.name)}</strong> "
        f"({escape(role_label(user.role))}, {escape(practice_label(user))}).</p>"
        "<h2>Extra security check</h2>"
        f"{_error(error)}"
        f'<form method="post" action="{escape(action)}">'
        f'<input type="hidden" name="pending" value="{escape(pending_id)}">'
        '<label for="code">Authentication code</label>'
        '<p id="code-help">Enter the 6-digit code from your authenticator app.</p>'
        '<input type="text" id="code" name="code" autocomplete="one-time-code" '
        'inputmode="numeric" pattern="[0-9]{6}" maxlength="6" required autofocus '
        f'aria-describedby="{described}"{invalid}>'
        f"{demo_hint}"
        '<div><button type="submit">Continue</button></div></form>'
    )
    return _layout(TITLE, content)


def error_page(heading: str, message: str) -> str:
    content = f"<h1>{escape(heading)}</h1>{_error(message)}"
    return _layout(heading, content)


def signed_out_page() -> str:
    content = "<h1>Signed out</h1><p>You have signed out of Primoro (demo).</p>"
    return _layout("Signed out", content)
