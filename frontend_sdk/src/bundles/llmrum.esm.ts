/** llmrum.esm.js, the ES module: the whole SDK, add-ons built in (EventSource, WebSocket,
 * chat text), with the API of src/index.ts. */
import { instrumentEventSource } from "../capture/eventsource";
import { _use } from "../index";
import { captureText } from "../capture/text";
import { instrumentWebSocket } from "../capture/websocket";

for (const addon of [instrumentEventSource, instrumentWebSocket, captureText]) _use(addon);

export { VERSION, action, feedback, flush, init, setConversation, setUser, startTurn, type Options } from "../index";
