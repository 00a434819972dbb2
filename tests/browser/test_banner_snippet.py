"""The snippet `manage.py serve` prints, pasted as is into a chat page in real
headless Chromium, records the page's chat turn: it names ``chatUrls`` (whose
default is empty, so a snippet without them records no turns)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from rumserver.management.commands.serve import Command
from tests import factories
from tests.browser.conftest import CHROMIUM, ChatApi, PageServer
from tests.browser.test_sdk_page import PAGE_JS, stored
from tests.chromium import close_quietly, new_context

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def banner_snippet(base_url: str, public_key: str) -> str:
    out = io.StringIO()
    Command(stdout=out)._banner(base_url, public_key)
    text = out.getvalue()
    return text.split("Paste this into your chat page:\n\n")[1].split("\n\nCtrl-C")[0]


def test_the_banners_snippet_names_chat_urls():
    snippet = banner_snippet("http://127.0.0.1:8000", "pk_test")
    assert snippet.startswith('<script src="http://127.0.0.1:8000/static/llmrum/llmrum.min.js">')
    assert 'key: "pk_test"' in snippet and "chatUrls: [" in snippet


def test_a_page_with_the_banners_snippet_records_its_chat_turn(
    browser: Any, live_server: Any, page_server: PageServer, chat_api: ChatApi,
    transactional_db: Any,
) -> None:  # fmt: skip
    app = factories.make_app("Pasted", origins=[page_server.origin]).application
    snippet = banner_snippet(live_server.url, app.public_key)
    page_server.html["/chat"] = (
        f"<!doctype html><title>chat</title>{snippet}<script>{PAGE_JS}</script>"
    )
    context = new_context(browser)
    try:
        page = context.new_page()
        page.goto(f"{page_server.origin}/chat")
        url = f"{chat_api.url}/v1/chat/completions"
        assert page.evaluate("(u) => runChat(u)", url) == "completed"
        (turn,) = stored(app, "turn")
        assert turn["outcome"] == "completed" and turn["url"].endswith("/v1/chat/completions")
    finally:
        close_quietly(context)
