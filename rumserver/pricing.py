"""Model prices (``rumapp price``) and what a turn's tokens cost at the price in
force at its time (DESIGN.md §10.6).

Costs are whole nano-dollars (1e-9 USD): a turn's cost is rounded once, when it is
stitched, and every sum after that (the exact metrics answer, rollups of minutes,
hours and days) adds the same integers, so both paths agree to the last digit.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from rumserver.models import Application, ModelPrice

# USD per million tokens -> nano-USD per token.
_NANO_PER_TOKEN = Decimal(1000)
NANO_USD = 1_000_000_000
_MAX_PRICE = Decimal("99999999.999999")  # what the price columns hold


class PriceError(ValueError):
    pass


def price_amount(text: str, *, name: str) -> Decimal:
    """A price as typed: a finite number of USD per million tokens, 0 or more."""
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise PriceError(f"--{name}: not a number: {text!r}") from None
    if not amount.is_finite():
        raise PriceError(f"--{name}: not a finite number: {text!r}")
    if amount < 0:
        raise PriceError(f"--{name}: a price cannot be negative: {text}")
    if amount > _MAX_PRICE:
        raise PriceError(f"--{name}: more than {_MAX_PRICE} USD per million tokens: {text}")
    return amount.quantize(Decimal("0.000001"))


def price_set(
    *,
    slug: str,
    model: str,
    input_usd: str,
    output_usd: str,
    cached_input_usd: str | None,
    now: datetime,
) -> ModelPrice:
    """Put a new price of ``model`` in force from ``now``; earlier prices stay, for
    the turns of their time. Everything is checked before anything is written."""
    amounts = (
        price_amount(input_usd, name="input"),
        price_amount(output_usd, name="output"),
        None if cached_input_usd is None else price_amount(cached_input_usd, name="cached-input"),
    )
    model = model.strip()
    if not model or len(model) > 128:
        raise PriceError("the model is its name as turns report it (1-128 characters)")
    app = Application.objects.filter(slug=slug).first()
    if app is None:
        raise PriceError(f"no application with slug {slug!r}")
    return ModelPrice.objects.create(
        app=app,
        model=model,
        input_usd_per_mtok=amounts[0],
        output_usd_per_mtok=amounts[1],
        cached_input_usd_per_mtok=amounts[2],
        in_force_from=now,
    )


@dataclass(frozen=True)
class _Price:
    from_ms: float
    input: Decimal
    output: Decimal
    cached_input: Decimal


@dataclass
class PriceBook:
    """Every price of some applications, by (app id, model), oldest first."""

    prices: dict[tuple[int, str], list[_Price]] = field(default_factory=dict)

    def price_at(self, app_id: int, model: str, at_ms: float) -> _Price | None:
        history = self.prices.get((app_id, model))
        if not history:
            return None
        index = bisect_right([p.from_ms for p in history], at_ms) - 1
        return history[index] if index >= 0 else None

    def cost_nano_usd(
        self,
        *,
        app_id: int,
        model: str,
        at_ms: float,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_input_tokens: int | None,
    ) -> int | None:
        """The turn's cost in nano-USD at the price in force at ``at_ms``; None when
        its model had no price then (an unpriced turn). Cached input tokens (part of
        ``input_tokens``) cost the cached-input price."""
        price = self.price_at(app_id, model, at_ms)
        if price is None:
            return None
        inputs = input_tokens or 0
        cached = min(cached_input_tokens or 0, inputs)
        nano = (
            (inputs - cached) * price.input
            + cached * price.cached_input
            + (output_tokens or 0) * price.output
        ) * _NANO_PER_TOKEN
        return int(nano.to_integral_value(rounding=ROUND_HALF_EVEN))


def price_book(*, app_ids: Iterable[int]) -> PriceBook:
    """The price history of these applications, in one query."""
    history: defaultdict[tuple[int, str], list[_Price]] = defaultdict(list)
    rows = ModelPrice.objects.filter(app_id__in=set(app_ids)).order_by("in_force_from", "id")
    for row in rows:
        history[(row.app_id, row.model)].append(
            _Price(
                from_ms=row.in_force_from.timestamp() * 1000,
                input=row.input_usd_per_mtok,
                output=row.output_usd_per_mtok,
                cached_input=(
                    row.input_usd_per_mtok
                    if row.cached_input_usd_per_mtok is None
                    else row.cached_input_usd_per_mtok
                ),
            )
        )
    return PriceBook(dict(history))


def usd(nano: int) -> float:
    """Nano-USD as USD."""
    return round(nano / NANO_USD, 9)
