/** Page views: the page as it loads, then each route change of a single-page app
 * (history.pushState / replaceState, back and forward, hash changes), with the URL it
 * left as its referrer. Off with `pageViews: false`. */
import type { Core } from "../core";
import { safe } from "../lib/util";

export const capturePageViews = (core: Core): void => {
  if (core.o.pageViews === false) return;
  const pageView = (routeChange: boolean, referrer: string | null): void =>
    core.event("page_view", { url: location.href, referrer, route_change: routeChange });
  pageView(false, document.referrer || null);
  let last = location.href;
  const check = safe(() => {
    if (location.href === last) return;
    const from = last;
    last = location.href;
    pageView(true, from);
  });
  for (const m of ["pushState", "replaceState"] as const) {
    const original = history[m];
    history[m] = function (this: History, ...a: Parameters<History["pushState"]>) {
      const r = original.apply(this, a);
      check();
      return r;
    };
  }
  addEventListener("popstate", check);
  addEventListener("hashchange", check);
};
