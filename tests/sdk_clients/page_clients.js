// The real chat clients as a page uses them, each streaming one answer from `base` and
// timing it as the page sees it: t0 when the page asks its client, first when the first
// text reaches the page. `stopAfter` tokens: the page stops the answer there, as a stop
// button does (the client's own abort). Bundled by esbuild for the browser tests.
import Anthropic from "@anthropic-ai/sdk";
import { DefaultChatTransport } from "ai";
import OpenAI from "openai";

const now = () => performance.timeOrigin + performance.now();
const PROMPT = "Say hello";

/** Reads the client's stream of text pieces, timing them, stopping after `stopAfter`. */
const read = async (pieces, stop, stopAfter) => {
  let first = null;
  let tokens = 0;
  let text = "";
  let outcome = "completed";
  try {
    for await (const piece of pieces) {
      if (!piece) continue;
      first ??= now();
      tokens++;
      text += piece;
      if (stopAfter && tokens >= stopAfter) {
        outcome = "stopped";
        stop();
        break;
      }
    }
  } catch (error) {
    if (outcome !== "stopped") outcome = `error: ${error?.name}: ${error?.message}`;
  }
  return { first, tokens, text, outcome };
};

const openai = async (base, stopAfter) => {
  const client = new OpenAI({ apiKey: "sk-test", baseURL: `${base}/v1`, dangerouslyAllowBrowser: true, maxRetries: 0 });
  const t0 = now();
  const stream = await client.chat.completions.create({
    model: "gpt-test",
    messages: [{ role: "user", content: PROMPT }],
    stream: true,
    stream_options: { include_usage: true },
  });
  async function* pieces() {
    for await (const chunk of stream) yield chunk.choices[0]?.delta?.content;
  }
  return { t0, ...(await read(pieces(), () => stream.controller.abort(), stopAfter)) };
};

const anthropic = async (base, stopAfter) => {
  const client = new Anthropic({ apiKey: "sk-ant-test", baseURL: base, dangerouslyAllowBrowser: true, maxRetries: 0 });
  const t0 = now();
  const stream = await client.messages.create({
    model: "claude-test",
    max_tokens: 256,
    messages: [{ role: "user", content: PROMPT }],
    stream: true,
  });
  async function* pieces() {
    for await (const event of stream) {
      if (event.type === "content_block_delta" && event.delta.type === "text_delta") yield event.delta.text;
    }
  }
  return { t0, ...(await read(pieces(), () => stream.controller.abort(), stopAfter)) };
};

const ai = async (base, stopAfter) => {
  const transport = new DefaultChatTransport({ api: `${base}/api/chat` });
  const controller = new AbortController();
  const t0 = now();
  const stream = await transport.sendMessages({
    trigger: "submit-message",
    chatId: "chat-1",
    messageId: undefined,
    messages: [{ id: "m1", role: "user", parts: [{ type: "text", text: PROMPT }] }],
    abortSignal: controller.signal,
  });
  async function* pieces() {
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      if (value.type === "text-delta") yield value.delta;
    }
  }
  return { t0, ...(await read(pieces(), () => controller.abort(), stopAfter)) };
};

window.chatClients = { openai, anthropic, ai };
