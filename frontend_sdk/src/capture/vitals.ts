/** Web Vitals (CLS, FCP, INP, LCP, TTFB by the web-vitals library), in the core bundle as
 * DESIGN §10.8 asks. Off with `vitals: false`. */
import { onCLS, onFCP, onINP, onLCP, onTTFB, type Metric } from "web-vitals";
import type { Core } from "../core";
import { safe } from "../lib/util";

export const captureVitals = (core: Core): void => {
  if (core.o.vitals === false) return;
  const vital = safe((m: Metric) =>
    core.event("vital", { id: m.id, name: m.name, value: m.value, delta: m.delta, rating: m.rating, navigation_type: m.navigationType }),
  );
  for (const on of [onCLS, onFCP, onINP, onLCP, onTTFB]) on(vital);
};
