/** EventSource: chat turns timed message by message. A subclass of the page's own
 * EventSource, so instanceof, onmessage, readyState and every event are exactly as
 * before; the SDK only adds its own listeners, which run before the page's. It
 * cannot send headers, so there is no traceparent here (the turn still has its ids). */
import { matches, safe, stripQuery, toUrl } from "../lib/util";
import type { Core } from "../core";
import type { Turn } from "../turn";

interface Hooks {
  _listen: (type: string) => void;
  _close: () => void;
}
const hooks = new WeakMap<object, Hooks>();

export const instrumentEventSource = (core: Core): void => {
  const Original = window.EventSource;
  if (!Original) return;
  const add = Original.prototype.addEventListener as (this: EventSource, type: string, fn: EventListener) => void;
  const watch = (es: EventSource, url: string | URL): void => {
    const u = toUrl(url);
    if (!u || !matches(core.o.chatUrls ?? [], u)) return;
    const turn: Turn = core.startTurn(stripQuery(u), "GET");
    const on = (type: string, fn: (e: MessageEvent) => void): void => add.call(es, type, safe(fn) as EventListener);
    on("open", () => turn.tHeaders === undefined && turn.headers(200));
    const onData = (e: MessageEvent): void => {
      if (turn.ended || typeof e.data !== "string") return;
      if (e.data.trim() === "[DONE]") return turn.end("completed");
      // The message as SSE text, so it is read by the same rules as a fetch stream.
      turn.chunk(`data:${e.data.split("\n").join("\ndata:")}\n\n`);
    };
    on("message", onData);
    // The connection ended (the server closed it, or it failed): completed once data
    // came, an error before any.
    on("error", () => (turn.chunks ? turn.end("completed") : turn.end("error", "EventSource error")));
    // Named events (`event: content_block_delta`, Anthropic) reach only listeners for
    // their type: watch each type the page listens to.
    const seen = new Set(["open", "message", "error"]);
    hooks.set(es, {
      _listen: (type) => {
        if (!seen.has(type)) {
          seen.add(type);
          on(type, onData);
        }
      },
      _close: () => turn.end("stopped"), // the page closed it before the answer ended
    });
  };
  const Base = Original as unknown as new (url: string | URL, init?: EventSourceInit) => { addEventListener(...a: unknown[]): void; close(): void };
  const Wrapped = class extends Base {
    constructor(url: string | URL, init?: EventSourceInit) {
      super(url, init);
      safe(watch)(this as unknown as EventSource, url);
    }
    addEventListener(...a: unknown[]): void {
      safe(() => hooks.get(this)?._listen(String(a[0])))();
      super.addEventListener(...a);
    }
    close(): void {
      super.close();
      safe(() => hooks.get(this)?._close())();
    }
  };
  // The page may read its name; it stays what it was.
  Object.defineProperty(Wrapped, "name", { value: Original.name });
  window.EventSource = Wrapped as unknown as typeof EventSource;
};
