/** llmrum.text.min.js: prompt and answer text through `redact` (src/text.ts). */
import { captureText } from "../text";
import { add } from "./add";

add(captureText);
