/** Batches events to the beacon endpoint: keepalive fetch while the page lives,
 * sendBeacon when it hides, retries with backoff, and a localStorage outbox so
 * nothing unsent is lost on reload (the server drops duplicates by event id). */
import { now, uuid } from "./lib/util";
import type { RumEvent } from "./types";

export interface Envelope {
  v: 1;
  sdk: { name: string; version: string };
  session: { id: string; started_at: number };
  page: { url: string; referrer: string };
  user?: { id: string };
}

interface Batch {
  env: Envelope;
  events: RumEvent[];
}

const MAX_EVENTS = 200; // per batch, the server's limit
const MAX_BYTES = 60_000; // under the 64 KiB shared by sendBeacon and keepalive fetch
const PREFIX = "llmrum:outbox:";
const enc = new TextEncoder();
/** UTF-8 bytes of the JSON of a value (a Blob would say it too, several times slower). */
const bytesOf = (v: unknown): number => enc.encode(JSON.stringify(v)).length;

export interface TransportOptions {
  url: string;
  envelope: () => Envelope;
  fetch: typeof fetch;
  maxQueue: number;
  flushInterval: number;
  /** First retry delay in ms; doubles up to a minute. */
  backoff?: number;
}

export class Transport {
  queue: RumEvent[] = [];
  outbox: Batch[] = [];
  dropped = 0;
  _sending = false;
  _attempt = 0;
  _timer: ReturnType<typeof setTimeout> | undefined;
  _timerAt = 0;
  _retryAt = 0;
  _store = PREFIX + uuid();
  _stored = false;
  /** Set when the page hides, until it shows again: what is reported meanwhile (Web
   * Vitals report LCP, CLS and INP then) is beaconed at once, as the page may be gone
   * before any timer fires. */
  _hidden = false;

  constructor(readonly o: TransportOptions) {
    this._claim();
  }

  add(event: RumEvent, soon = false): void {
    this.queue.push(event);
    // Bounded: a page left open with the server down must not grow without end.
    const over = this.queue.length + this._outboxEvents() - this.o.maxQueue;
    if (over > 0) {
      this.queue.splice(0, over);
      this.dropped += over;
    }
    if (this._hidden) this.hide();
    else this._schedule(soon ? 50 : this.o.flushInterval);
  }

  _outboxEvents(): number {
    return this.outbox.reduce((n, b) => n + b.events.length, 0);
  }

  _schedule(ms: number): void {
    const at = Math.max(Date.now() + ms, this._retryAt);
    if (this._timer !== undefined) {
      if (this._timerAt <= at) return;
      clearTimeout(this._timer);
    }
    this._timerAt = at;
    this._timer = setTimeout(() => {
      this._timer = undefined;
      void this.flush();
    }, at - Date.now());
  }

  /** Cuts the queue into batches within the server's limits. */
  _cut(): void {
    while (this.queue.length) {
      const env = this.o.envelope();
      if (this.dropped) (env as Envelope & { dropped?: number }).dropped = this.dropped;
      let bytes = bytesOf(env) + 64;
      let n = 0;
      for (const e of this.queue) {
        const size = bytesOf(e) + 1;
        if (n >= MAX_EVENTS || bytes + size > MAX_BYTES) break;
        bytes += size;
        n++;
      }
      if (!n) {
        this.queue.shift(); // one event bigger than a batch: it can never be sent
        this.dropped++;
        continue;
      }
      this.outbox.push({ env, events: this.queue.splice(0, n) });
    }
  }

  _body(b: Batch): string {
    // sent_at is re-stamped on every attempt: the server aligns clocks with it.
    return JSON.stringify({ ...b.env, sent_at: now(), events: b.events });
  }

  /** Sends everything with keepalive fetch, one batch at a time, until done or failing. */
  async flush(): Promise<void> {
    if (this._sending) return;
    this._sending = true;
    try {
      this._cut();
      while (this.outbox.length) {
        if (Date.now() < this._retryAt) break;
        const batch = this.outbox[0] as Batch;
        let retryIn = 0;
        try {
          const r = await this.o.fetch(this.o.url, {
            method: "POST",
            body: this._body(batch),
            headers: { "content-type": "text/plain;charset=UTF-8" },
            keepalive: true,
            credentials: "omit",
          });
          if (r.status === 429 || r.status === 408 || r.status >= 500) {
            // Retry-After is readable cross-origin only when the server exposes it.
            const after = Number(r.headers.get("retry-after"));
            retryIn = Math.max(this._delay(), after > 0 ? after * 1000 : 0);
          }
        } catch {
          retryIn = this._delay(); // network error or server down
        }
        if (retryIn) {
          this._attempt++;
          this._retryAt = Date.now() + retryIn;
          break;
        }
        // Delivered, or refused for good (4xx): either way this batch is done.
        this._attempt = 0;
        this._retryAt = 0;
        this.outbox.shift();
        this._cut();
      }
    } finally {
      this._sending = false;
      this._save();
      if (this.outbox.length || this.queue.length) this._schedule(this.o.flushInterval);
    }
  }

  _delay(): number {
    const base = (this.o.backoff ?? 1000) * 2 ** Math.min(this._attempt, 6);
    return Math.min(60_000, base) * (0.75 + Math.random() / 2);
  }

  /** The page is hiding: it may never run again. Beacon what we can, store the rest. */
  hide(): void {
    this._hidden = true;
    this._cut();
    // While the server is failing, a beacon would be lost (its answer is never seen):
    // keep the batches for the next page instead.
    if (!this._retryAt) {
      for (const b of [...this.outbox]) {
        if (this._sending && b === this.outbox[0]) continue; // in flight already
        if (!navigator.sendBeacon?.(this.o.url, this._body(b))) break;
        this.outbox.splice(this.outbox.indexOf(b), 1);
      }
    }
    this._save();
  }

  _save(): void {
    try {
      // Storage is slow: an empty outbox that was never stored costs nothing.
      if (this.outbox.length) localStorage.setItem(this._store, JSON.stringify(this.outbox));
      else if (this._stored) localStorage.removeItem(this._store);
      this._stored = this.outbox.length > 0;
    } catch {
      /* storage full or disabled: keep going in memory */
    }
  }

  /** Takes over what earlier pages left unsent. A page still open re-stores its own
   * on its next save, so at worst a batch is sent twice and the server dedups it. */
  _claim(): void {
    try {
      for (let i = localStorage.length - 1; i >= 0; i--) {
        const k = localStorage.key(i);
        if (!k?.startsWith(PREFIX)) continue;
        const batches = JSON.parse(localStorage.getItem(k) ?? "[]") as Batch[];
        localStorage.removeItem(k);
        this.outbox.push(...batches);
      }
    } catch {
      /* unreadable: start empty */
    }
    if (this.outbox.length) this._schedule(0);
  }
}
