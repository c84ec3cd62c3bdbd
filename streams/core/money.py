"""Money in the core: integer minor units ("cents") and exact splitting of an amount.

Why integers: attribution splits a deal's value over touchpoints with five models, and the
parts must add up to the deal value exactly, in every model, for every deal, on every replay.
Floats cannot promise that (0.1 + 0.2 != 0.3); integer minor units with a largest-remainder
split can. Amounts arrive as JSON numbers in major units (``99.5`` EUR); they are converted once,
here, with decimal arithmetic on the number's shortest repr (so ``0.29`` is 29 cents, not
``int(0.29 * 100) == 28``), half-to-even.

Minor units follow ISO 4217's exponent: 2 for most currencies, 0 for e.g. JPY and KRW, 3 for
e.g. KWD and BHD. "cents" in field names means these minor units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

#: Currencies whose minor unit is not 1/100 (ISO 4217); every other code has exponent 2.
EXPONENTS: dict[str, int] = {
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0, "PYG": 0,
    "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
}
DEFAULT_EXPONENT = 2
#: ISO 4217's code for "no currency": a value without one is still money, just of unknown unit.
NO_CURRENCY = "XXX"
#: Largest amount accepted, in minor units (ClickHouse Int64 and JSON integers stay exact far above).
MAX_MINOR = 10**15


def exponent(currency: str) -> int:
    return EXPONENTS.get(currency, DEFAULT_EXPONENT)


def to_minor(amount: object, currency: str, allow_negative: bool = False) -> int | None:
    """A JSON number in major units → integer minor units; None when it is not a usable amount
    (not a number, NaN/inf, negative unless allowed, or beyond :data:`MAX_MINOR`)."""
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return None
    if isinstance(amount, float) and not math.isfinite(amount):
        return None
    try:
        scaled = (Decimal(repr(amount)) * (10 ** exponent(currency))).quantize(Decimal(1), ROUND_HALF_EVEN)
    except InvalidOperation:
        return None
    minor = int(scaled)
    if (minor < 0 and not allow_negative) or abs(minor) > MAX_MINOR:
        return None
    return minor


def to_major(minor: int, currency: str) -> float:
    """For display only (ROI ratios, the board): never feed the result back into a split."""
    return minor / 10 ** exponent(currency)


def allocate(total: int, weights: Sequence[int]) -> list[int]:
    """Split ``total`` in proportion to non-negative integer ``weights``; the parts sum to ``total``.

    Largest remainder (Hamilton): each part is ``floor(total * w / W)``, and the units left over go
    one each to the largest remainders; equal remainders go to the later position (in attribution
    the later touch, i.e. the one nearer the deal). Integer arithmetic throughout, so the result
    is the same on every machine. A zero total weight puts everything on the last position.
    """
    n = len(weights)
    if n == 0:
        raise ValueError("allocate needs at least one weight")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative")
    w_sum = sum(weights)
    if w_sum == 0:
        return [0] * (n - 1) + [total]
    sign = -1 if total < 0 else 1
    magnitude = abs(total)
    parts: list[int] = []
    remainders: list[tuple[int, int]] = []
    for i, w in enumerate(weights):
        q, r = divmod(magnitude * w, w_sum)
        parts.append(q)
        remainders.append((r, i))
    left = magnitude - sum(parts)
    for _, i in sorted(remainders, reverse=True)[:left]:
        parts[i] += 1
    return [sign * p for p in parts]
