/** WebSocket turns, opt-in (`webSocketTurns`): on a socket whose URL the app's `match`
 * accepts, a turn starts when the page sends (its prompt) and takes every message that
 * arrives until the app's `isEnd` says the answer is over. A subclass of the page's own
 * WebSocket that only adds listeners, so the page sees every message unchanged. No
 * headers on a socket: the turn has its own trace ids, but no traceparent. */
import { safe, stripQuery, toUrl } from "../lib/util";
import type { Core } from "../core";
import type { Turn } from "../turn";

const hooks = new WeakMap<object, { _send: (data: unknown) => void; _close: () => void }>();

export const instrumentWebSocket = (core: Core): void => {
  const Original = window.WebSocket;
  const rule = core.o.webSocketTurns;
  if (!Original || !rule) return;
  const decoder = new TextDecoder();
  const watch = (ws: WebSocket, url: string | URL): void => {
    const u = toUrl(url);
    if (!u || !rule.match(u.href)) return;
    let turn: Turn | undefined;
    const end = (outcome: "completed" | "stopped" | "error", error?: string): void => {
      turn?.end(outcome, error);
      turn = undefined;
    };
    const on = (type: string, fn: (e: Event) => void): void =>
      Original.prototype.addEventListener.call(ws, type, safe(fn) as EventListener);
    on("message", (e) => {
      if (!turn || turn.ended) return;
      const data: unknown = (e as MessageEvent).data;
      const text = typeof data === "string" ? data : data instanceof ArrayBuffer ? decoder.decode(data) : "";
      // One message is one event: JSON (NDJSON rules), SSE text or a Vercel line.
      turn.chunk(text + "\n\n");
      if (safe(rule.isEnd)(data)) end("completed");
    });
    on("error", () => end("error", "WebSocket error"));
    on("close", (e) => end("error", `WebSocket closed (${(e as CloseEvent).code})`));
    hooks.set(ws, {
      // One turn at a time: what the page sends while an answer streams (a stop
      // message, say) belongs to that turn.
      _send: (data) => {
        if (!turn || turn.ended) turn = core.startTurn(stripQuery(u), "WS", data);
      },
      _close: () => end("stopped"),
    });
  };
  const Base = Original as unknown as new (url: string | URL, protocols?: string | string[]) => {
    send(data: unknown): void;
    close(code?: number, reason?: string): void;
  };
  const Wrapped = class extends Base {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols);
      safe(watch)(this as unknown as WebSocket, url);
    }
    send(data: unknown): void {
      super.send(data); // throws as before when the socket is not open
      safe(() => hooks.get(this)?._send(data))();
    }
    close(code?: number, reason?: string): void {
      safe(() => hooks.get(this)?._close())();
      super.close(code, reason);
    }
  };
  // The page may read its name; it stays what it was.
  Object.defineProperty(Wrapped, "name", { value: Original.name });
  window.WebSocket = Wrapped as unknown as typeof WebSocket;
};
