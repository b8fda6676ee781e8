"""Shared by the commerce services: money amounts."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from core.exceptions import ValidationError

CENT = Decimal("0.01")
# Money columns are numeric(12, 2).
MAX_AMOUNT = Decimal("10000000000")


def money(value: Any, *, field: str = "amount") -> Decimal:
    """A Decimal rounded to cents; refuses floats' junk digits, NaN, infinities and non-numbers."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise ValidationError(f"{field} must be a number, got {value!r}") from None
    if not amount.is_finite():
        raise ValidationError(f"{field} must be a finite number")
    try:
        return amount.quantize(CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:  # more digits than the context's precision: 1e300
        raise ValidationError(f"{field} is too large: {float(amount):.6g}") from None
