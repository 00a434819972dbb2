/** Uncaught errors and unhandled promise rejections of the page, as page context for its
 * turns. Off with `errors: false`. */
import type { Core } from "../core";
import { cut, safe } from "../lib/util";

const MAX_ERRORS = 50; // a page throwing in a loop must not flood the queue

export const captureErrors = (core: Core): void => {
  if (core.o.errors === false) return;
  let n = 0;
  const report = safe((message: string, source: string | null, lineno: number | null, colno: number | null, stack: string | null) => {
    if (n++ < MAX_ERRORS) core.event("error", { message: cut(message, 1024), source, lineno, colno, stack });
  });
  addEventListener("error", (e) => {
    const err = e.error as Error | undefined;
    if (e.message) report(e.message, e.filename || null, e.lineno || null, e.colno || null, err?.stack ?? null);
  });
  addEventListener("unhandledrejection", (e) => {
    const r = e.reason as Error | undefined;
    report(`Unhandled rejection: ${r?.message ?? String(r)}`, null, null, null, r?.stack ?? null);
  });
};
