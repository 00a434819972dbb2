"""The browser SDK under the chat clients apps really use: the openai, @anthropic-ai/sdk
and ai (Vercel AI SDK) npm packages, bundled for a page, each streaming from a local
server in its own wire format through real headless Chromium. What the SDK stores for
each turn matches what the page saw: the first token within 5 ms of the page's own
first-token time (after the first call, which compiles the page's code), the tokens a
stopped answer delivered, and the model as the stream names it (null when it does not)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from rumserver.models import BrowserEvent
from tests import factories
from tests.chromium import CHROMIUM, close_quietly, new_context
from tests.sdk_clients.conftest import TOKENS, USAGE, ChatSite

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]

STOP_AFTER = 4
MODELS = {"openai": "gpt-test", "anthropic": "claude-test", "ai": None}
# What each stream says of its usage, as the SDK keeps it (integer counts only).
STREAM_USAGE = {
    "openai": {"prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21},
    "anthropic": USAGE,
    "ai": None,
}


def chat_page(live_url: str, key: str) -> str:
    options = {"endpoint": live_url, "key": key, "flushInterval": 200}
    chat_urls = "[/\\/v1\\/chat\\/completions/, /\\/v1\\/messages/, /\\/api\\/chat/]"
    return f"""<!doctype html><title>chat</title>
<script src="{live_url}/static/llmrum/llmrum.min.js"></script>
<script>llmrum.init(Object.assign({json.dumps(options)}, {{chatUrls: {chat_urls}}}));</script>
<script src="/clients.js"></script>"""


def stored_turns(app: Any, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        rows = [r.data for r in BrowserEvent.objects.filter(app=app, type="turn")]
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) >= count, f"expected {count} stored turns, got {rows}"
            return sorted(rows, key=lambda turn: turn["turn_index"])
        time.sleep(0.1)


@pytest.mark.parametrize("client", ["openai", "anthropic", "ai"])
def test_a_real_clients_turns_are_stored_as_the_page_saw_them(
    browser: Any, live_server: Any, chat_site: ChatSite, client: str
) -> None:
    app = factories.make_app(origins=[chat_site.origin]).application
    chat_site.html["/chat"] = chat_page(live_server.url, app.public_key)
    context = new_context(browser)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{chat_site.origin}/chat")
    ask = "([client, base, stop]) => chatClients[client](base, stop)"
    # Three whole answers (the first warms the page's code up), then one stopped.
    seen = [page.evaluate(ask, [client, chat_site.origin, stop]) for stop in (0, 0, 0, STOP_AFTER)]
    turns = stored_turns(app, len(seen))
    close_quietly(context)
    assert not errors, errors  # neither the SDK nor the client threw into the page

    assert [s["outcome"] for s in seen] == ["completed"] * 3 + ["stopped"]
    assert [s["text"] for s in seen[:3]] == ["".join(TOKENS)] * 3
    assert [t["outcome"] for t in turns] == ["completed"] * 3 + ["stopped"]
    for s, turn in list(zip(seen, turns, strict=True))[1:]:
        # The same first token, on the same clock: the page's TTFT and the SDK's differ
        # by the client's own parsing only.
        assert abs(turn["t_first_token"] - s["first"]) <= 5, (client, turn, s)
    for turn in turns:
        assert turn["model"] == MODELS[client]
        assert turn["url"].startswith(chat_site.origin)
    for turn in turns[:3]:
        assert turn["output_tokens"] == len(TOKENS)
        assert turn["tokens_estimated"] is (STREAM_USAGE[client] is None)
        assert turn["usage"] == STREAM_USAGE[client]
        # A gap is between reads that carried text; on a busy machine two tokens 40 ms
        # apart can come in one read.
        assert 1 <= turn["tbt_summary"]["count"] <= len(TOKENS) - 1

    # Stopped after four tokens: four stored, as an estimate from what arrived (never
    # Anthropic's message_start placeholder of 1); the input count Anthropic sent is kept.
    stopped = turns[3]
    assert seen[3]["tokens"] == STOP_AFTER
    assert (stopped["output_tokens"], stopped["tokens_estimated"]) == (STOP_AFTER, True)
    assert stopped["usage"] == ({"input_tokens": 9} if client == "anthropic" else None)

    # The calls were traced (same origin): each request carried its turn's ids.
    sent = [r["traceparent"] for r in chat_site.requests]
    assert sent == [f"00-{t['trace_id']}-{t['span_id']}-01" for t in turns]
