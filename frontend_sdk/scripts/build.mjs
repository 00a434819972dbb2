// Builds the SDK: a minified IIFE (global `llmrum`) that Django serves at
// /static/llmrum/llmrum.min.js, and an ES module. Both are committed; CI rebuilds
// and fails if they differ, so a Python-only user never needs npm.
import { build } from "esbuild";

const common = {
  entryPoints: ["src/index.ts"],
  bundle: true,
  minify: true,
  target: "es2020",
  legalComments: "none",
  // Private members (`_name`) get short names, as web-vitals does with terser.
  mangleProps: /^_/,
  logLevel: "warning",
};

await build({ ...common, format: "iife", globalName: "llmrum", outfile: "static/llmrum/llmrum.min.js" });
await build({ ...common, format: "esm", outfile: "static/llmrum/llmrum.esm.js" });
