"""Bar charts as inline SVG, drawn on the server for the dashboard page.

The portal's security policy allows no scripts and no inline styles, and images only from the
portal itself, so a chart is SVG markup placed in the page: shapes coloured with presentation
attributes (`fill`, `stroke`), never `style`. Every text is escaped; the chart names itself
(`role="img"`, `aria-label`, `<title>`) and each bar carries its label and value in a `<title>`
too. The page shows the same numbers in a table beside the chart for those who cannot see it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from markupsafe import Markup

WIDTH, HEIGHT = 640, 260
LEFT, RIGHT, TOP, BOTTOM = 84, 16, 16, 64
BAR_FILL = "#0b6e7f"
AXIS = "#5b6775"
GRID = "#d5dbe2"
TEXT = "#1d2733"


def _nice_top(value: int) -> int:
    """The axis' top: the smallest 1, 2, 4, 6 or 8 x 10^n at or above the largest value (even,
    so the half-way tick is a whole number too: 3 gets a top of 4 and a tick at 2)."""
    if value <= 0:
        return 1
    step = 1
    while True:
        for factor in (1, 2, 4, 6, 8):
            if step * factor >= value:
                return step * factor
        step *= 10


def bar_chart(
    title: str,
    labels: Sequence[str],
    values: Sequence[int],
    *,
    describe: Callable[[int], str] = str,
    y_label: str = "",
    x_label: str = "",
) -> Markup:
    """A vertical bar chart of `values` (integers, >= 0 drawn upwards; negatives as 0 height)
    named by `labels`; `describe` writes a value for people (e.g. as money)."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_top(max([0, *values]))
    slot = plot_w / max(len(values), 1)
    bar_w = max(min(slot * 0.7, 60.0), 1.0)
    summary = "; ".join(f"{label}: {describe(v)}" for label, v in zip(labels, values, strict=True))
    base = TOP + plot_h
    # Markup(...).format escapes every value put into the (constant) markup.
    parts = [
        Markup(
            '<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
            'viewBox="0 0 {w} {h}" width="100%" aria-label="{name}: {summary}">'
            "<title>{name}</title>"
        ).format(w=WIDTH, h=HEIGHT, name=title, summary=summary or "no data")
    ]
    # Gridlines and the value axis: 0, half, top.
    for fraction in (0.0, 0.5, 1.0) if top >= 2 else (0.0, 1.0):
        y = f"{TOP + plot_h * (1 - fraction):.1f}"
        parts.append(
            Markup(
                '<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{grid}" stroke-width="1"/>'
                '<text x="{tx}" y="{ty:.1f}" text-anchor="end" font-size="11" fill="{ink}">'
                "{tick}</text>"
            ).format(
                x1=LEFT,
                x2=WIDTH - RIGHT,
                y=y,
                grid=GRID,
                tx=LEFT - 6,
                ty=float(y) + 4,
                ink=TEXT,
                tick=describe(round(top * fraction)),
            )
        )
    parts.append(
        Markup(
            '<line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="{axis}" stroke-width="1"/>'
            '<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="{axis}" stroke-width="1"/>'
        ).format(l=LEFT, t=TOP, b=base, r=WIDTH - RIGHT, axis=AXIS)
    )
    every = max(1, -(-len(labels) // 14))  # at most about 14 category labels under the axis
    for index, (label, value) in enumerate(zip(labels, values, strict=True)):
        height = plot_h * max(value, 0) / top
        x = LEFT + slot * index + (slot - bar_w) / 2
        parts.append(
            Markup(
                '<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
                'fill="{fill}"><title>{label}: {value}</title></rect>'
            ).format(
                x=x,
                y=base - height,
                w=bar_w,
                h=height,
                fill=BAR_FILL,
                label=label,
                value=describe(value),
            )
        )
        if index % every == 0:
            parts.append(
                Markup(
                    '<text x="{x:.1f}" y="{y}" text-anchor="middle" font-size="11" '
                    'fill="{ink}">{label}</text>'
                ).format(x=x + bar_w / 2, y=base + 16, ink=TEXT, label=label)
            )
    if x_label:
        parts.append(
            Markup(
                '<text x="{x:.1f}" y="{y}" text-anchor="middle" font-size="12" '
                'fill="{ink}">{text}</text>'
            ).format(x=LEFT + plot_w / 2, y=HEIGHT - 8, ink=AXIS, text=x_label)
        )
    if y_label:
        parts.append(
            Markup(
                '<text x="14" y="{y:.1f}" text-anchor="middle" font-size="12" fill="{ink}" '
                'transform="rotate(-90 14 {y:.1f})">{text}</text>'
            ).format(y=TOP + plot_h / 2, ink=AXIS, text=y_label)
        )
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


__all__ = ["bar_chart"]
