"""python manage.py rumapp create|list|rotate-token|grant (DESIGN.md §3)."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from rumserver.applications import token_hash
from rumserver.models import Application, ApplicationMember

pytestmark = pytest.mark.django_db


def rumapp(*args: str) -> str:
    out = StringIO()
    call_command("rumapp", *args, stdout=out)
    return out.getvalue()


def test_create_prints_one_json_line_with_the_keys():
    out = rumapp("create", "Support Bot", "--origin", "http://127.0.0.1:8080", "--origin",
                 "https://Chat.Example.com:443/")  # fmt: skip
    lines = out.splitlines()
    assert len(lines) == 1 and "\n" not in out.rstrip("\n")
    data = json.loads(lines[0])
    assert set(data) == {"slug", "public_key", "ingest_token"}
    assert lines[0] == json.dumps(data, separators=(",", ":"))  # compact
    assert data["slug"] == "support-bot"
    assert data["public_key"].startswith("pk_") and data["ingest_token"].startswith("it_")
    app = Application.objects.get(slug="support-bot")
    assert app.allowed_origins == ["http://127.0.0.1:8080", "https://chat.example.com"]


def test_the_ingest_token_is_stored_hashed_only():
    data = json.loads(rumapp("create", "Hashed"))
    app = Application.objects.get(slug=data["slug"])
    assert app.ingest_token_hash == token_hash(data["ingest_token"])
    stored = json.dumps(list(Application.objects.values()), default=str)
    assert data["ingest_token"] not in stored


def test_rotate_token_replaces_the_token_and_keeps_the_public_key():
    first = json.loads(rumapp("create", "Rotating"))
    second = json.loads(rumapp("rotate-token", first["slug"]))
    assert second["public_key"] == first["public_key"]
    assert second["ingest_token"] != first["ingest_token"]
    app = Application.objects.get(slug=first["slug"])
    assert app.ingest_token_hash == token_hash(second["ingest_token"])
    assert app.ingest_token_hash != token_hash(first["ingest_token"])


def test_grant_makes_a_user_a_member_once():
    data = json.loads(rumapp("create", "Granted"))
    User.objects.create_user("bob")
    assert "bob may now see granted" in rumapp("grant", data["slug"], "bob")
    rumapp("grant", data["slug"], "bob")
    assert ApplicationMember.objects.filter(user__username="bob").count() == 1


def test_list_shows_each_application_without_its_secret():
    data = json.loads(rumapp("create", "Listed", "--origin", "http://localhost:3000"))
    out = rumapp("list")
    assert "listed" in out and data["public_key"] in out
    assert "http://localhost:3000" in out
    assert data["ingest_token"] not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("rotate-token", "nope"), "no application with slug 'nope'"),
        (("grant", "nope", "bob"), "no application with slug 'nope'"),
        (("create", "X", "--origin", "ftp://files.example.com"), "not an origin"),
        (("create", "X", "--origin", "https://a.example.com/path"), "no path"),
        (("create", "X", "--sample-rate", "1.5"), "sample rate"),
        (("create", "!!!"), "cannot make a slug"),
    ],
)
def test_bad_arguments_are_clear_errors(args, message):
    with pytest.raises(CommandError, match=message):
        rumapp(*args)
    assert not Application.objects.filter(slug="x").exists()


def test_create_twice_with_one_slug_is_an_error():
    rumapp("create", "Twice")
    with pytest.raises(CommandError, match="exists already"):
        rumapp("create", "Twice")
    assert Application.objects.filter(slug="twice").count() == 1


def test_grant_to_an_unknown_user_is_an_error():
    data = json.loads(rumapp("create", "Nobody"))
    with pytest.raises(CommandError, match="no user named 'ghost'"):
        rumapp("grant", data["slug"], "ghost")
    assert not ApplicationMember.objects.exists()
