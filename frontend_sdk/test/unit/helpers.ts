import Ajv2020 from "ajv/dist/2020";
import { readFileSync } from "node:fs";
import { setClock } from "../../src/lib/util";

/** The server's published payload schema: what the SDK sends must pass it. strict: false
 * ignores the OpenAPI-style `discriminator` keyword msgspec emits. */
export const validateBeacon = new Ajv2020({ strict: false, allErrors: true }).compile(
  JSON.parse(readFileSync(`${__dirname}/../../../rumserver/schemas/beacon.v1.json`, "utf8")),
);

/** A clock the test moves by hand. */
export const fakeClock = (start = 1_700_000_000_000) => {
  let t = start;
  setClock(() => t);
  return { tick: (ms: number) => (t += ms), get: () => t };
};

export const sse = (obj: unknown): string => `data: ${JSON.stringify(obj)}\n\n`;
export const openai = (content?: string, extra: Record<string, unknown> = {}) =>
  sse({ model: "gpt-4o-mini", choices: [{ delta: content === undefined ? { role: "assistant" } : { content } }], ...extra });

/** A body the test feeds chunk by chunk. */
export const controlledBody = () => {
  let ctl!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({ start: (c) => void (ctl = c) });
  const enc = new TextEncoder();
  return {
    stream,
    push: (s: string) => ctl.enqueue(enc.encode(s)),
    close: () => ctl.close(),
    error: (e: unknown) => ctl.error(e),
  };
};
