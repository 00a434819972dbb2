/** XMLHttpRequest: the same headers and turns as fetch. The page sees streamed text
 * through responseText at readystatechange (browsers fire it at most every ~50 ms),
 * so that is what a turn measures here. */
import { safe, toUrl } from "../lib/util";
import type { Core } from "../core";
import { failure } from "./fetch";

interface Meta {
  url: URL;
  method: string;
  headers: Record<string, string>;
}

export const instrumentXHR = (core: Core): void => {
  const proto = window.XMLHttpRequest?.prototype;
  if (!proto) return;
  const { open, send, setRequestHeader } = proto;
  const meta = new WeakMap<XMLHttpRequest, Meta>();

  proto.open = function (this: XMLHttpRequest, method: string, url: string | URL, ...rest: unknown[]) {
    safe(() => {
      const u = toUrl(url);
      if (u) meta.set(this, { url: u, method: method.toUpperCase(), headers: {} });
    })();
    return (open as (...a: unknown[]) => void).call(this, method, url, ...rest);
  } as typeof proto.open;

  proto.setRequestHeader = function (this: XMLHttpRequest, name: string, value: string) {
    safe(() => {
      const m = meta.get(this);
      if (m) m.headers[name.toLowerCase()] = value;
    })();
    return setRequestHeader.call(this, name, value);
  };

  proto.send = function (this: XMLHttpRequest, body?: Document | XMLHttpRequestBodyInit | null) {
    safe(() => {
      const m = meta.get(this);
      if (!m) return;
      const p = core.prepare(m.url, m.method, (k, v) => setRequestHeader.call(this, k, v), (k) => m.headers[k] ?? null, body);
      const turn = p.turn;
      if (!turn) return;
      let seen = 0;
      const read = (): void => {
        if (this.readyState >= 2 && turn.tHeaders === undefined) turn.headers(this.status);
        if (this.readyState >= 3 && (this.responseType === "" || this.responseType === "text")) {
          const text = this.responseText;
          if (text.length > seen) turn.chunk(text.slice(seen));
          seen = text.length;
        }
      };
      this.addEventListener("readystatechange", safe(read));
      this.addEventListener("abort", safe(() => turn.end("stopped")));
      this.addEventListener("timeout", safe(() => turn.end("error", "timeout")));
      this.addEventListener("error", safe(() => turn.end("error", failure(new TypeError("network error"), p.traced))));
      this.addEventListener(
        "load",
        safe(() => {
          read();
          turn.end(this.status >= 400 ? "error" : "completed", this.status >= 400 ? `HTTP ${this.status}` : undefined);
        }),
      );
    })();
    return send.call(this, body);
  };
};
