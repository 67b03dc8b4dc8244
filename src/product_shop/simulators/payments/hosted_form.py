"""The hosted payment page as a browser sees it: Integrated Payments' own card form (DNA
Payments behind it), on the simulator's origin, so card data never passes through the merchant.
After a payment the browser goes back to the `return_url` the merchant gave when it created the
intent, with `intent_id` and `merchant_reference` added to its query (the merchant confirms the
outcome through the API; these say only which payment to look at)."""

from __future__ import annotations

from html import escape
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fastapi.responses import HTMLResponse

from product_shop.simulators.payments.state import Intent

SYMBOLS = {"GBP": "£", "EUR": "€", "USD": "$"}

# The page is the simulator's own: inline styles are its business, not Product Shop's policy.
STYLE = """
body{font-family:system-ui,sans-serif;margin:0;background:#eef2f6;color:#1b2430}
header{background:#0b3d5c;color:#fff;padding:.8rem 1rem}
header strong{display:block;font-size:1.1rem}
main{max-width:26rem;margin:1rem auto;background:#fff;padding:1rem 1.2rem;border-radius:.5rem}
label{display:block;font-weight:600;margin:.8rem 0 .3rem}
input{width:100%;box-sizing:border-box;font-size:1.1rem;padding:.6rem;border:1px solid #5b6b7b}
button{margin-top:1rem;width:100%;font-size:1.1rem;padding:.7rem;background:#0b6b3a;color:#fff;
border:0;border-radius:.3rem;cursor:pointer}
button:focus,input:focus{outline:3px solid #f0b400;outline-offset:2px}
.error{background:#fde8e8;border-left:4px solid #b00020;padding:.6rem}
.amount{font-size:1.6rem;font-weight:700;margin:.2rem 0}
.small{font-size:.85rem;color:#4a5866}
"""


def _money(minor: int, currency: str) -> str:
    whole, pence = divmod(minor, 100)
    symbol = SYMBOLS.get(currency)
    return f"{symbol}{whole:,}.{pence:02d}" if symbol else f"{whole:,}.{pence:02d} {currency}"


def _page(title: str, body: str, status: int) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en-GB"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)} · Integrated Payments</title><style>{STYLE}</style></head>
<body><header><strong>Integrated Payments</strong>
<span>Secure payment by DNA Payments (simulator)</span></header>
<main>{body}</main></body></html>"""
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def card_page(intent: Intent, error: str | None = None, *, status: int = 200) -> HTMLResponse:
    """The card form for an intent, with the last attempt's refusal when there was one."""
    amount = _money(intent.amount_minor, intent.currency)
    problem = f'<p class="error" role="alert">{escape(error)}</p>' if error else ""
    body = f"""<h1>Pay {escape(amount)}</h1>
<p>This payment page is Integrated Payments' (DNA Payments). Your card details go to
Integrated Payments only; the shop never sees them.</p>
<p class="amount">{escape(amount)}</p>
<p class="small">Reference {escape(intent.merchant_reference)}</p>
{problem}
<form method="post" action="/pay/{escape(intent.intent_id)}/card">
<label for="card_number">Card number</label>
<input id="card_number" name="card_number" inputmode="numeric" autocomplete="cc-number"
 required minlength="12" maxlength="23" aria-describedby="cards">
<button type="submit">Pay {escape(amount)}</button>
</form>
<p id="cards" class="small">Simulator test cards: 4242 4242 4242 4242 is paid;
4000 0000 0000 0002 is declined.</p>"""
    return _page("Pay", body, status)


def closed_page(title: str, text: str, status: int) -> HTMLResponse:
    return _page(title, f"<h1>{escape(title)}</h1><p>{escape(text)}</p>", status)


def unknown_page() -> HTMLResponse:
    return closed_page("No such payment", "This payment link is not known.", 404)


def back_to(intent: Intent) -> str:
    """The intent's return URL with which payment it was added to the query."""
    assert intent.return_url is not None
    parts = urlsplit(intent.return_url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query += [("intent_id", intent.intent_id), ("merchant_reference", intent.merchant_reference)]
    return urlunsplit(parts._replace(query=urlencode(query)))
