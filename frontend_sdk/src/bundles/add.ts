/** An add-on file of the script-tag build registers itself with the core loaded before
 * it; without the core it does nothing (it never throws into the page). */
import type { Core } from "../core";

export const add = (addon: (core: Core) => void): void =>
  (window as unknown as { llmrum?: { _use?: (a: (core: Core) => void) => void } }).llmrum?._use?.(addon);
