/** Small helpers shared by the capture modules. */

/** Epoch ms on the browser clock: timeOrigin + now() is monotonic within the page,
 * unlike Date.now(), which jumps when the system clock is set (STANDARDS §6.1). */
// `performance` and timeOrigin are getters into the browser: read them once (now() runs
// on every chunk).
const perf = performance;
const origin = perf.timeOrigin;
export let now = (): number => origin + perf.now();

/** Tests inject a clock, like Faro's getNow. */
export const setClock = (clock: () => number): void => {
  now = clock;
};

/** Random lowercase hex, `bytes` long. Math.random, as OpenTelemetry JS's id generator:
 * ids need to be unique, not secret, and crypto.getRandomValues costs a call into the
 * browser on the request's path. */
export const hex = (bytes: number): string => {
  let s = "";
  while (s.length < 2 * bytes) s += Math.random().toString(16).slice(2); // 13 digits or so
  s = s.slice(0, 2 * bytes);
  // All-zero ids are invalid in W3C trace context; the odds are 2^-64, but be exact.
  return /^0+$/.test(s) ? hex(bytes) : s;
};

export const uuid = (): string => hex(16);

/** Runs a hook so that nothing it throws ever reaches the host page. */
export const safe = <A extends unknown[], R>(fn: (...a: A) => R) =>
  (...a: A): R | undefined => {
    try {
      return fn(...a);
    } catch {
      return undefined;
    }
  };

export type UrlPattern = string | RegExp;

/** A string matches as a substring of the absolute URL (like Sentry's
 * tracePropagationTargets); a RegExp is tried on the absolute URL and, for
 * same-origin URLs, on the path too, so that /^\/api\// works. */
export const matches = (patterns: readonly UrlPattern[], url: URL): boolean =>
  patterns.some((p) => {
    if (typeof p === "string") return url.href.includes(p);
    p.lastIndex = 0;
    if (p.test(url.href)) return true;
    p.lastIndex = 0;
    return url.origin === location.origin && p.test(url.pathname + url.search);
  });

export const toUrl = (input: string | URL): URL | undefined => {
  try {
    return new URL(String(input), location.href);
  } catch {
    return undefined;
  }
};

/** The first `n` UTF-16 units of `s`, less one if that would split a surrogate pair:
 * a lone surrogate is not text, and the server refuses an event holding one. */
export const cut = (s: string, n: number): string =>
  s.slice(0, n - (s.length > n && s.charCodeAt(n - 1) >> 10 === 0x36 ? 1 : 0));

/** The URL without query or fragment: queries often carry keys or user text. */
export const stripQuery = (url: URL): string => url.origin + url.pathname;
