// Fails when the `gzip -9` size of a built file grows past size-budget.json: GNU gzip's
// own count (`gzip -9 < file | wc -c`), which is a little more than Node's zlib makes;
// Node's zlib only where there is no gzip on PATH.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

const gzip9 = (file) => {
  try {
    return execFileSync("gzip", ["-9", "-n", "-c", file]).length;
  } catch {
    return gzipSync(readFileSync(file), { level: 9 }).length;
  }
};

const budget = JSON.parse(readFileSync("size-budget.json", "utf8"));
let failed = false;
for (const [file, limit] of Object.entries(budget.gzip_bytes)) {
  const size = gzip9(file);
  console.log(`llmrum: ${file} ${size} B gzip -9 (budget ${limit} B)`);
  if (size > limit) failed = true;
}
if (failed) {
  console.error("llmrum: the bundle grew past its budget (frontend_sdk/size-budget.json)");
  process.exit(1);
}
