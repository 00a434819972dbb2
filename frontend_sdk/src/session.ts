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
let memory: Session | undefined;

/** localStorage is synchronous and slow (milliseconds on a busy machine, more after an
 * idle while), so a turn's path never touches it: the copy in memory is the session
 * while it is fresh. Storage is read when there is none in memory or it has gone stale
 * (another tab may have kept the session alive meanwhile), and written when a session
 * starts and, at most once a minute, when a batch of events is sent (saveSession). */
export const getSession = (timeout: number, sampleRate: number): Session => {
  const t = now();
  if (!memory || t - memory.last > timeout) {
    let s: Session | undefined;
    try {
      s = JSON.parse(localStorage.getItem(KEY) ?? "null") ?? undefined;
    } catch {
      s = memory; // storage disabled or unreadable: per page
    }
    if (!s || t - s.last > timeout) s = { id: uuid(), started_at: t, last: t, sampled: Math.random() < sampleRate };
    memory = s;
    saveSession();
  }
  memory.last = t;
  return memory;
};

let saved = -Infinity;

/** Stores the session; `often` false: at most once a minute (what other tabs need of
 * `last` against a 30-minute timeout), as storage is slow. */
export const saveSession = (often = true): void => {
  if (!often && memory && memory.last - saved < 60_000) return;
  try {
    localStorage.setItem(KEY, JSON.stringify(memory));
    saved = memory?.last ?? saved;
  } catch {
    /* keep it in memory */
  }
};

/** Tests: forget the copy in memory (as a new page would). */
export const forgetSession = (): void => {
  memory = undefined;
  saved = -Infinity;
};
