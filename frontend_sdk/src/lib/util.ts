/** Small helpers shared by the capture modules. */

/** Epoch ms on the browser clock: timeOrigin + now() is monotonic within the page,
 * unlike Date.now(), which jumps when the system clock is set (STANDARDS §6.1). */
const origin = performance.timeOrigin; // a getter into the browser: read it once
export let now = (): number => origin + performance.now();

/** Tests inject a clock, like Faro's getNow. */
export const setClock = (clock: () => number): void => {
  now = clock;
};

export const hex = (bytes: number): string => {
  const a = crypto.getRandomValues(new Uint8Array(bytes));
  let s = "";
  for (const b of a) s += (b < 16 ? "0" : "") + b.toString(16);
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

/** The URL without query or fragment: queries often carry keys or user text. */
export const stripQuery = (url: URL): string => url.origin + url.pathname;
