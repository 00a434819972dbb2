/** The page hiding, when it may never run again: turns still streaming are abandoned (the
 * user left before the answer ended) and the queue is beaconed. Showing again (back from
 * the back/forward cache) ends that. */
import type { Core } from "./core";
import { safe } from "./lib/util";

export const watchLifecycle = (core: Core): void => {
  const hidden = (): void => {
    for (const turn of [...core.active]) turn.end("abandoned");
    core.transport.hide();
  };
  const shown = safe(() => {
    core.transport._hidden = false;
  });
  addEventListener("pagehide", safe(hidden));
  addEventListener("pageshow", shown);
  document.addEventListener(
    "visibilitychange",
    safe(() => (document.visibilityState === "hidden" ? hidden() : shown())),
  );
};
