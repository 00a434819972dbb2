// Builds the SDK: a minified IIFE (global `llmrum`) that Django serves at
// /static/llmrum/llmrum.min.js, the add-on files a page adds after it (EventSource,
// WebSocket, chat text), and an ES module with everything. All are committed; CI
// rebuilds them and fails if they differ, so a Python-only user never needs npm.
import { writeFileSync } from "node:fs";
import { build } from "esbuild";
import { minify } from "terser";

// Properties that never leave the bundle get one-letter names: private members
// (`_name`, as web-vitals does with terser) and these internal fields. None of them is a
// DOM property, an option, a payload field or a public method, and web-vitals uses none.
const INTERNAL = [
  "tSend", "tHeaders", "tFirst", "tLast", "tokenEvents", "gaps", "stopRequested", "ended",
  "parser", "ctx", "traceId", "spanId", "turnIndex", "regenerateOf", "intentCorrection",
  "active", "lastSpanId", "transport", "outbox", "queue", "userId", "propagates", "prepare",
  "emit", "envelope", "chars",
];

const common = {
  bundle: true,
  minify: true,
  // ES2020, but with class fields as written (every browser with ES2020 has them):
  // lowered, each field costs a defineProperty helper call.
  target: "es2020",
  supported: { "class-field": true },
  legalComments: "none",
  mangleProps: new RegExp(`^(_.*|${INTERNAL.join("|")})$`),
  logLevel: "warning",
  write: false,
};

// terser after esbuild: a few hundred bytes more off (gzip) than esbuild alone.
const shrink = async (code, module) =>
  (
    await minify(code, {
      ecma: 2020,
      module,
      compress: { passes: 2, unsafe_arrows: true, unsafe_methods: true, pure_getters: true },
      mangle: true,
      format: { ecma: 2020 },
    })
  ).code;

// Chromium's explicit compile hint: the file's functions are compiled as it loads (off the
// main thread when it can), not lazily when first called, which would be in the page's
// first chat turn, before its first chunk (milliseconds on a slow machine).
const COMPILE_HINT = "//# allFunctionsCalledOnLoad\n";

// The core first; the add-ons then get its property names (mangleCache), as they reach
// into its objects (core.startTurn, turn.chunk...) through window.llmrum._use.
let mangleCache = {};
for (const [format, outfile, entry] of [
  // The script tag's build sets window.llmrum itself (src/bundles/llmrum.ts).
  ["iife", "static/llmrum/llmrum.min.js", "src/bundles/llmrum.ts"],
  ["iife", "static/llmrum/llmrum.eventsource.min.js", "src/bundles/llmrum.eventsource.ts"],
  ["iife", "static/llmrum/llmrum.websocket.min.js", "src/bundles/llmrum.websocket.ts"],
  ["iife", "static/llmrum/llmrum.text.min.js", "src/bundles/llmrum.text.ts"],
  ["esm", "static/llmrum/llmrum.esm.js", "src/bundles/llmrum.esm.ts"],
]) {
  const out = await build({ ...common, entryPoints: [entry], format, mangleCache });
  mangleCache = out.mangleCache;
  writeFileSync(outfile, COMPILE_HINT + (await shrink(out.outputFiles[0].text, format === "esm")) + "\n");
}
