/** llmrum.websocket.min.js: WebSocket chat turns (src/capture/websocket.ts, `webSocketTurns`). */
import { instrumentWebSocket } from "../capture/websocket";
import { add } from "./add";

add(instrumentWebSocket);
