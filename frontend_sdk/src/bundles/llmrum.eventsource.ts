/** llmrum.eventsource.min.js: EventSource chat turns (src/capture/eventsource.ts). */
import { instrumentEventSource } from "../capture/eventsource";
import { add } from "./add";

add(instrumentEventSource);
