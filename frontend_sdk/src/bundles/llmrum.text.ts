/** llmrum.text.min.js: prompt and answer text through `redact` (src/capture/text.ts). */
import { captureText } from "../capture/text";
import { add } from "./add";

add(captureText);
