/** What every transport shares: the session, the conversation, the decision to
 * propagate, and the making of turns. */
import { hex, matches, now, stripQuery, uuid, type UrlPattern } from "./lib/util";
import { getSession, saveSession, type Session } from "./session";
import { Transport } from "./transport";
import { Turn } from "./turn";
import type { Options, RumEvent } from "./types";

export const VERSION = "0.1.0";
const TRACEPARENT = /^\s*00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}\s*$/;

/** The W3C traceparent header of a span (version 00); sampled as the session is. */
export const traceparent = (traceId: string, spanId: string, sampled: boolean): string =>
  `00-${traceId}-${spanId}-${sampled ? "01" : "00"}`;

export interface Prepared {
  turn?: Turn | undefined;
  traced: boolean;
}

export class Core {
  transport: Transport;
  conversationId: string | undefined;
  turnIndex = 0;
  userId: string | undefined;
  /** Turns whose answer is still arriving: a stop click or the page hiding ends them. */
  active = new Set<Turn>();
  lastSpanId: string | undefined;
  /** Recent turns' trace ids by span id: feedback and actions name their turn's trace,
   * so the server re-stitches it (first-response accuracy follows a late thumbs-down). */
  traceOf = new Map<string, string>();
  /** Set by regenerate/edit clicks, taken by the next turn. */
  next: { regenerateOf?: string | undefined; intentCorrection?: boolean } = {};
  _targets: UrlPattern[];
  /** Called with each new turn and what the page sent (the text add-on reads its prompt). */
  _onTurn: ((turn: Turn, body: unknown) => void) | undefined;

  constructor(readonly o: Options, fetchImpl: typeof fetch) {
    this._targets = o.tracePropagationTargets ?? [];
    this.conversationId = o.conversationId;
    this.userId = o.user;
    this.transport = new Transport({
      url: `${o.endpoint.replace(/\/$/, "")}/rum/v1/beacon?key=${encodeURIComponent(o.key)}`,
      envelope: () => {
        const s = this.session();
        saveSession(false); // the session's last activity, for other tabs: off the turn's path
        return {
          v: 1,
          sdk: { name: "llmrum", version: VERSION },
          session: { id: s.id, started_at: s.started_at },
          page: { url: location.href, referrer: document.referrer },
          ...(this.userId ? { user: { id: this.userId } } : {}),
        };
      },
      fetch: fetchImpl,
      maxQueue: o.maxQueue ?? 1000,
      flushInterval: o.flushInterval ?? 5000,
    });
  }

  session(): Session {
    return getSession(this.o.sessionTimeout ?? 30 * 60_000, this.o.sampleRate ?? 1);
  }

  emit(event: RumEvent, soon = false): void {
    if (this.session().sampled) this.transport.add(event, soon);
  }

  event<T extends RumEvent["type"]>(type: T, fields: Record<string, unknown>, soon = false): void {
    this.emit({ type, id: uuid(), ts: now(), ...fields } as RumEvent, soon);
  }

  propagates(url: URL): boolean {
    // Same origin by default; otherwise only what the app lists (a preflight that
    // refuses traceparent would break the request: STANDARDS §6.6).
    return url.origin === location.origin || matches(this._targets, url);
  }

  /** Decides headers and turn for one request. `set`/`get` touch its headers. */
  prepare(
    url: URL,
    method: string,
    set: (k: string, v: string) => void,
    get: (k: string) => string | null,
    body?: unknown,
  ): Prepared {
    const chat = matches(this.o.chatUrls ?? [], url);
    const traced = this.propagates(url);
    if (!chat && !traced) return { traced };
    const s = this.session();
    let traceId = hex(16);
    let spanId = hex(8);
    if (traced) {
      const own = TRACEPARENT.exec(get("traceparent") ?? "");
      if (own) [, traceId, spanId] = own as unknown as [string, string, string]; // the app traces itself: report its ids
      else set("traceparent", traceparent(traceId, spanId, s.sampled));
      const bag = get("baggage");
      if (!bag?.includes("session.id=")) set("baggage", (bag ? bag + "," : "") + "session.id=" + encodeURIComponent(s.id));
    }
    return { traced, turn: chat ? this.startTurn(stripQuery(url), method, body, traceId, spanId) : undefined };
  }

  /** `body`: what the page sent (its prompt), read only by the text add-on. */
  startTurn(url: string, method: string, body?: unknown, traceId = hex(16), spanId = hex(8)): Turn {
    const turn = new Turn(
      {
        traceId,
        spanId,
        conversationId: this.conversationId ?? this.session().id,
        turnIndex: this.turnIndex++,
        ...this.next,
      },
      url,
      method,
      this.o.parseChunk,
      (event) => {
        this.active.delete(turn);
        this.emit(event, true);
      },
    );
    this._onTurn?.(turn, body);
    this.next = {};
    this.lastSpanId = spanId;
    this.traceOf.set(spanId, traceId);
    if (this.traceOf.size > 64) this.traceOf.delete(this.traceOf.keys().next().value!);
    this.active.add(turn);
    return turn;
  }
}
