/** llmrum.eventsource.min.js: EventSource chat turns (src/eventsource.ts). */
import { instrumentEventSource } from "../eventsource";
import { add } from "./add";

add(instrumentEventSource);
