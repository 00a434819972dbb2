/** llmrum.min.js, the script tag's file: the API as `window.llmrum`, assigned directly
 * (esbuild's globalName would add its CommonJS export helpers, ~150 B gzip). `_use` is for
 * the add-on files (llmrum.eventsource/websocket/text.ts here), built with the same
 * property names. */
import { VERSION, _use, action, feedback, flush, init, setConversation, setUser, startTurn } from "../index";

(window as unknown as { llmrum: object }).llmrum = { VERSION, action, feedback, flush, init, setConversation, setUser, startTurn, _use };
