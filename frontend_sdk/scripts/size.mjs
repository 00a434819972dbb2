// Fails when the gzip -9 size of the bundle grows past size-budget.json.
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const budget = JSON.parse(readFileSync("size-budget.json", "utf8"));
let failed = false;
for (const [file, limit] of Object.entries(budget.gzip_bytes)) {
  const size = gzipSync(readFileSync(file), { level: 9 }).length;
  console.log(`llmrum: ${file} ${size} B gzip -9 (budget ${limit} B)`);
  if (size > limit) failed = true;
}
if (failed) {
  console.error("llmrum: the bundle grew past its budget (frontend_sdk/size-budget.json)");
  process.exit(1);
}
