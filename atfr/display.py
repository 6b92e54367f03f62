"""Numbers for people: probabilities that stay readable when a model has hundreds of classes."""

from __future__ import annotations


def format_prob(p: float) -> str:
    """Three significant digits at any magnitude: 0.912, 0.0473, 0.00231, 4.1e-05.

    A fixed ``.2f`` prints 0.00 for most classes of a 400-class model (uniform is 0.0025), which
    hides the ranking the line is meant to show."""
    p = float(p)
    if p != p:
        return "nan"
    if p >= 0.1:
        return f"{p:.3f}"
    if p >= 1e-4:
        return f"{p:.3g}" if p >= 1e-3 else f"{p:.2g}"
    return f"{p:.1e}" if p > 0 else "0"


def format_percent(p: float) -> str:
    """A probability as a percentage with 3 significant digits, for overlays and per-clip lines:
    "59.1%", "0.25%", "0.00251%".

    Fixed decimals print "0.00" for every class of a 400-class model (uniform = 0.0025)."""
    pct = 100.0 * float(p)
    if pct >= 10.0:
        return f"{pct:.1f}%"
    return f"{pct:.3g}%"
