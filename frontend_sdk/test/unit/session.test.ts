import { describe, expect, it, vi } from "vitest";
import { forgetSession, getSession, saveSession } from "../../src/session";
import { fakeClock } from "./helpers";

const MIN = 60_000;
const stored = () => JSON.parse(localStorage.getItem("llmrum:session") ?? "null");

describe("session", () => {
  it("starts one, stores it, and another tab (a new page) takes the same", () => {
    fakeClock();
    const s = getSession(30 * MIN, 1);
    expect(stored()).toMatchObject({ id: s.id, sampled: true });
    forgetSession(); // another page of the same browser
    expect(getSession(30 * MIN, 1).id).toBe(s.id);
  });

  it("keeps a turn's path off storage while the session is fresh", () => {
    const clock = fakeClock();
    const first = getSession(30 * MIN, 1);
    const get = vi.spyOn(Storage.prototype, "getItem");
    const set = vi.spyOn(Storage.prototype, "setItem");
    for (let i = 0; i < 5; i++) {
      clock.tick(10 * MIN);
      expect(getSession(30 * MIN, 1).id).toBe(first.id); // activity keeps it alive
    }
    expect([get.mock.calls.length, set.mock.calls.length]).toEqual([0, 0]);
    saveSession(); // what a beacon send does
    expect(stored().last).toBe(clock.get());
  });

  it("is renewed after the timeout idle, unless another tab kept it alive", () => {
    const clock = fakeClock();
    const s = getSession(30 * MIN, 1);
    clock.tick(31 * MIN);
    localStorage.setItem("llmrum:session", JSON.stringify({ ...stored(), last: clock.get() - MIN })); // the other tab
    expect(getSession(30 * MIN, 1).id).toBe(s.id);
    clock.tick(31 * MIN);
    const renewed = getSession(30 * MIN, 1);
    expect(renewed.id).not.toBe(s.id);
    expect(stored().id).toBe(renewed.id);
  });

  it("lives in memory when storage is disabled", () => {
    fakeClock();
    vi.spyOn(Storage.prototype, "getItem").mockImplementation(() => {
      throw new DOMException("denied", "SecurityError");
    });
    vi.spyOn(Storage.prototype, "setItem").mockImplementation(() => {
      throw new DOMException("denied", "SecurityError");
    });
    const s = getSession(30 * MIN, 1);
    expect(getSession(30 * MIN, 1).id).toBe(s.id);
  });
});
