/** User actions by markup, no code: a click inside an element with
 * `data-llmrum="stop|regenerate|edit|copy|feedback-up|feedback-down"` is that action on
 * the turn its `data-llmrum-turn` names, else the last turn. Stop, regenerate and edit
 * also mark the turns they change (stopped now, or the next one). */
import type { Core } from "../core";
import { safe } from "../lib/util";

/** The turn an action or feedback is about: its span id and its trace id. */
export const about = (core: Core, span: string | null | undefined) => ({
  turn_span_id: span ?? null,
  trace_id: (span && core.traceOf.get(span)) || null,
});

export const captureActions = (core: Core): void => {
  const onClick = (e: Event): void => {
    const el = (e.target as Element | null)?.closest?.("[data-llmrum]");
    const name = el?.getAttribute("data-llmrum");
    if (!name) return;
    const turnSpan = el?.closest("[data-llmrum-turn]")?.getAttribute("data-llmrum-turn") ?? core.lastSpanId;
    if (name === "feedback-up" || name === "feedback-down") {
      core.event("feedback", { value: name === "feedback-up" ? "up" : "down", comment: null, ...about(core, turnSpan) });
      return;
    }
    if (name === "stop") for (const t of core.active) t.stopRequested = true;
    if (name === "regenerate") core.next.regenerateOf = turnSpan ?? undefined;
    if (name === "edit") core.next.intentCorrection = true;
    core.event("action", { name, attrs: {}, ...about(core, turnSpan) });
  };
  addEventListener("click", safe(onClick), true);
};
