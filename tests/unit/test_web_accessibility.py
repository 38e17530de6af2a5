"""Accessibility basics of the status page that can be checked without a browser: every text
colour in the stylesheet against the background it is drawn on meets WCAG 2.x AA contrast
(4.5:1 for normal text), every form control has a label, and focus is visible.
The browser test (tests/integration/test_web_browser.py) checks keyboard reach."""

from __future__ import annotations

import re
from importlib import resources

import pytest

CSS = resources.files("certfailover.web").joinpath("static/style.css").read_text()
AA = 4.5


def rules(css: str) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", re.sub(r"/\*.*?\*/", "", css)):
        decls = {k.strip(): v.strip() for k, v in
                     (d.split(":", 1) for d in body.split(";") if ":" in d)}
        for sel in selectors.split(","):
            out.setdefault(sel.strip(), {}).update(decls)
    return out


def luminance(hex_colour: str) -> float:
    h = hex_colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    def channel(v: int) -> float:
        c = v / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(int(h[i:i + 2], 16)) for i in (0, 2, 4))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_the_contrast_formula() -> None:
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#777", "#fff") == pytest.approx(4.48, abs=0.01)  # the classic near-miss


def pairs() -> list[tuple[str, str, str]]:
    """(selector, text colour, background) for every rule that sets a text colour or a
    background; what a rule does not set comes from body."""
    css = rules(CSS)
    body = css["body"]
    out = []
    for sel, decls in css.items():
        if "color" in decls or "background" in decls:
            colour = decls.get("color", body["color"])
            background = decls.get("background", body["background"])
            if colour.startswith("#") and background.startswith("#"):
                out.append((sel, colour, background))
    return out


def test_every_text_colour_meets_aa_on_its_background() -> None:
    found = pairs()
    assert {s for s, _, _ in found} >= {"body", "a", ".state.fail", ".state.warn", ".state.ok",
                                        "thead th", ".notes li"}
    low = [(s, c, b, round(contrast(c, b), 2)) for s, c, b in found if contrast(c, b) < AA]
    assert low == []


def test_focus_is_visible_on_every_control() -> None:
    css = rules(CSS)
    for control in ("a:focus", "button:focus", "select:focus", "input:focus"):
        assert "outline" in css[control] and "none" not in css[control]["outline"]


def test_every_form_control_in_the_templates_has_a_label() -> None:
    templates = resources.files("certfailover.web").joinpath("templates")
    for t in templates.iterdir():
        html = t.read_text()
        for tag, attrs in re.findall(r"<(select|input|textarea)\b([^>]*)>", html):
            if 'type="hidden"' in attrs or 'type="submit"' in attrs:
                continue
            m = re.search(r'\bid="([^"]+)"', attrs)
            assert m, f"{t.name}: <{tag}{attrs}> has no id for a <label for>"
            assert f'<label for="{m[1]}"' in html, f"{t.name}: no <label for=\"{m[1]}\">"
