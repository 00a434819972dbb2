// The llmrum demo chat. Config comes from this script tag's data- attributes (no
// inline script: the pages run under a Content-Security-Policy that forbids it).
(function () {
  "use strict";
  var config = document.currentScript.dataset;
  var chatUrl = config.chatUrl;
  var escaped = chatUrl.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  if (window.llmrum && config.key) {
    window.llmrum.init({
      endpoint: location.origin,
      key: config.key,
      chatUrls: [new RegExp(escaped + "$")],
      tracePropagationTargets: [location.origin],
      flushInterval: 1000,
    });
  }

  var $ = function (id) { return document.getElementById(id); };
  var form = $("composer"), prompt = $("prompt"), list = $("messages"), statusLine = $("status");
  var buttons = { send: $("send"), stop: $("stop"), regenerate: $("regenerate"), edit: $("edit"),
                  up: $("thumbs-up"), down: $("thumbs-down") };
  var history = [];       // [{role, content}] sent with each request
  var controller = null;  // the AbortController of the answer in flight
  var lastPrompt = null;
  var turns = 0;          // finished answers, for tests and the status line

  function setBusy(busy) {
    buttons.send.disabled = busy;
    buttons.stop.disabled = !busy;
    var idle = !busy && lastPrompt !== null;
    buttons.regenerate.disabled = !idle;
    buttons.edit.disabled = !idle;
    buttons.up.disabled = !idle;
    buttons.down.disabled = !idle;
    document.body.dataset.busy = busy ? "1" : "0";
  }

  function bubble(role, text) {
    var li = document.createElement("li");
    li.className = "msg " + role;
    li.textContent = text;
    list.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  function meta(li, text, traceId) {
    var span = document.createElement("span");
    span.className = "meta";
    span.textContent = text;
    if (traceId && config.tracePrefix) {
      var a = document.createElement("a");
      a.href = config.tracePrefix + traceId;
      a.textContent = "trace";
      a.className = "trace-link";
      span.appendChild(document.createTextNode(" · "));
      span.appendChild(a);
    }
    li.appendChild(span);
  }

  function traceIdOf(response) {
    var timing = response.headers.get("Server-Timing") || "";
    var match = /trace;desc="?00-([0-9a-f]{32})-/.exec(timing);
    return match ? match[1] : "";
  }

  async function ask(text) {
    lastPrompt = text;
    history.push({ role: "user", content: text });
    bubble("user", text);
    var li = bubble("assistant", "");
    li.dataset.state = "streaming";
    controller = new AbortController();
    setBusy(true);
    statusLine.textContent = "Waiting for the first token…";
    var t0 = performance.now(), first = null, answer = "", state = "completed", traceId = "";
    try {
      var response = await fetch(chatUrl, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ model: $("model").value, messages: history, stream: true,
                               stream_options: { include_usage: true } }),
        signal: controller.signal,
      });
      traceId = traceIdOf(response);
      if (!response.ok) {
        var body = await response.json().catch(function () { return {}; });
        throw new Error((body.error && body.error.message) || "HTTP " + response.status);
      }
      var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "";
      for (;;) {
        var step = await reader.read();
        if (step.done) break;
        buffer += decoder.decode(step.value, { stream: true });
        var events = buffer.split("\n\n");
        buffer = events.pop();
        for (var i = 0; i < events.length; i++) {
          var line = events[i].trim();
          if (!line.startsWith("data:")) continue;
          var data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          var chunk = JSON.parse(data);
          var delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (first === null) {
              first = performance.now();
              statusLine.textContent = "First token after " + Math.round(first - t0) + " ms";
            }
            answer += delta.content;
            li.textContent = answer;
          }
        }
      }
    } catch (error) {
      if (error.name === "AbortError") {
        state = "stopped";
      } else {
        state = "error";
        li.textContent = answer || "Error: " + error.message;
      }
    }
    controller = null;
    li.classList.add(state);
    li.dataset.state = state;
    if (traceId) li.dataset.traceId = traceId;
    var took = Math.round(performance.now() - t0);
    meta(li, state + (first !== null ? " · first token " + Math.round(first - t0) + " ms" : "") +
      " · " + took + " ms", traceId);
    history.push({ role: "assistant", content: answer });
    turns += 1;
    document.body.dataset.turns = String(turns);
    statusLine.textContent = "Answer " + state + " after " + took + " ms.";
    setBusy(false);
  }

  function dropLastExchange() {
    history.splice(-2, 2);
    var items = list.querySelectorAll("li");
    for (var i = Math.max(0, items.length - 2); i < items.length; i++) items[i].remove();
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var text = prompt.value.trim();
    if (!text || controller) return;
    prompt.value = "";
    ask(text);
  });
  prompt.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
  buttons.stop.addEventListener("click", function () {
    if (controller) controller.abort();
  });
  // The snippet sees the data-llmrum clicks itself (regenerate_of, intent_correction,
  // feedback); the page only does what a chat app does.
  buttons.regenerate.addEventListener("click", function () {
    if (lastPrompt === null || controller) return;
    var text = lastPrompt;
    dropLastExchange();
    ask(text);
  });
  buttons.edit.addEventListener("click", function () {
    if (lastPrompt === null || controller) return;
    prompt.value = lastPrompt;
    dropLastExchange();
    lastPrompt = null;
    setBusy(false);
    prompt.focus();
  });
  function thanks(event) {
    statusLine.textContent = "Thanks for the feedback.";
    event.currentTarget.disabled = true;
  }
  buttons.up.addEventListener("click", thanks);
  buttons.down.addEventListener("click", thanks);
  setBusy(false);
})();
