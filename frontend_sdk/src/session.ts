/** The session: one id per browser across tabs, renewed after 30 minutes idle.
 * Also decides sampling once per session, so a session is kept or not as a whole. */
import { now, uuid } from "./lib/util";

export interface Session {
  id: string;
  started_at: number;
  last: number;
  sampled: boolean;
}

const KEY = "llmrum:session";
let memory: Session | undefined; // storage disabled (privacy modes): per page

export const getSession = (timeout: number, sampleRate: number): Session => {
  const t = now();
  // Asked several times a turn: within a second, the copy in memory is the session
  // (localStorage is synchronous, and slow on the first-chunk path).
  if (memory && t - memory.last < 1000 && t >= memory.last) return memory;
  let s: Session | undefined;
  try {
    s = JSON.parse(localStorage.getItem(KEY) ?? "null") ?? undefined;
  } catch {
    s = memory; // storage disabled or unreadable
  }
  if (!s || t - s.last > timeout) s = { id: uuid(), started_at: t, last: t, sampled: Math.random() < sampleRate };
  s.last = t;
  memory = s;
  try {
    localStorage.setItem(KEY, JSON.stringify(s));
  } catch {
    /* keep it in memory */
  }
  return s;
};

/** Tests: forget the copy in memory (as a new page would). */
export const forgetSession = (): void => {
  memory = undefined;
};
