"""``python manage.py rumapp create|list|rotate-token|grant|price|prices`` (DESIGN.md
§3, §10.6).

``create`` and ``rotate-token`` print exactly one compact JSON line on stdout, so
scripts can read the token (which is shown only this once).
"""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from rumserver.applications import (
    ApplicationError,
    application_create,
    application_grant,
    application_rotate_token,
)
from rumserver.models import Application, ModelPrice
from rumserver.pricing import PriceError, price_set


class Command(BaseCommand):
    help = "Create and manage llmrum applications and their keys."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="create an application; prints its keys once")
        create.add_argument("name")
        create.add_argument(
            "--origin",
            action="append",
            default=[],
            help="an origin allowed to send beacons (repeatable)",
        )
        create.add_argument("--slug")
        create.add_argument("--sample-rate", type=float, default=1.0)
        create.add_argument("--retention-days", type=int)
        sub.add_parser("list", help="list applications")
        rotate = sub.add_parser("rotate-token", help="issue a new ingest token")
        rotate.add_argument("slug")
        grant = sub.add_parser("grant", help="let a user see an application's data")
        grant.add_argument("slug")
        grant.add_argument("username")
        price = sub.add_parser(
            "price",
            help="put a model's price in force from now (USD per million tokens); "
            "earlier prices stay for the turns of their time",
        )
        price.add_argument("slug")
        price.add_argument("model", help="the model name as turns report it")
        price.add_argument("--input", required=True, metavar="USD")
        price.add_argument("--output", required=True, metavar="USD")
        price.add_argument("--cached-input", metavar="USD", help="default: the input price")
        prices = sub.add_parser("prices", help="list an application's prices, newest first")
        prices.add_argument("slug")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            getattr(self, "_" + options["action"].replace("-", "_"))(options)
        except (ApplicationError, PriceError) as exc:
            raise CommandError(str(exc)) from None

    def _line(self, data: dict[str, Any]) -> None:
        self.stdout.write(json.dumps(data, separators=(",", ":")))

    def _create(self, options: dict[str, Any]) -> None:
        created = application_create(
            name=options["name"],
            origins=options["origin"],
            slug=options["slug"],
            sample_rate=options["sample_rate"],
            retention_days=options["retention_days"],
        )
        app = created.application
        self._line(
            {"slug": app.slug, "public_key": app.public_key, "ingest_token": created.ingest_token}
        )

    def _rotate_token(self, options: dict[str, Any]) -> None:
        created = application_rotate_token(slug=options["slug"])
        app = created.application
        self._line(
            {"slug": app.slug, "public_key": app.public_key, "ingest_token": created.ingest_token}
        )

    def _list(self, options: dict[str, Any]) -> None:
        apps = Application.objects.prefetch_related("members").order_by("slug")
        for app in apps:
            members = ",".join(sorted(u.get_username() for u in app.members.all())) or "-"
            origins = ",".join(app.allowed_origins) or "-"
            self.stdout.write(
                f"{app.slug}\t{app.name}\t{app.public_key}\t{app.ingest_token_prefix}…"
                f"\torigins={origins}\tmembers={members}"
            )

    def _grant(self, options: dict[str, Any]) -> None:
        member = application_grant(slug=options["slug"], username=options["username"])
        self.stdout.write(f"{member.user.get_username()} may now see {member.application.slug}")

    def _price(self, options: dict[str, Any]) -> None:
        price = price_set(
            slug=options["slug"],
            model=options["model"],
            input_usd=options["input"],
            output_usd=options["output"],
            cached_input_usd=options["cached_input"],
            now=timezone.now(),
        )
        self.stdout.write(
            f"{price.model}: input {price.input_usd_per_mtok}, output {price.output_usd_per_mtok}"
            f", cached input {price.cached_input_usd_per_mtok or price.input_usd_per_mtok}"
            f" USD per million tokens, in force from {price.in_force_from.isoformat()}"
        )

    def _prices(self, options: dict[str, Any]) -> None:
        if not Application.objects.filter(slug=options["slug"]).exists():
            raise CommandError(f"no application with slug {options['slug']!r}")
        rows = ModelPrice.objects.filter(app__slug=options["slug"]).order_by(
            "model", "-in_force_from", "-id"
        )
        for row in rows:
            cached = row.cached_input_usd_per_mtok
            self.stdout.write(
                f"{row.model}\tinput={row.input_usd_per_mtok}\toutput={row.output_usd_per_mtok}"
                f"\tcached_input={'-' if cached is None else cached}"
                f"\tfrom={row.in_force_from.isoformat()}"
            )
