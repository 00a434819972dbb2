/** llmrum.websocket.min.js: WebSocket chat turns (src/websocket.ts, `webSocketTurns`). */
import { instrumentWebSocket } from "../websocket";
import { add } from "./add";

add(instrumentWebSocket);
