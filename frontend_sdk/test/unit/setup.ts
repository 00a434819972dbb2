/** Every test starts as a fresh page of a fresh browser: nothing in storage, no session
 * in memory. (Spies are restored before each test by vitest.config.ts, restoreMocks.) */
import { beforeEach } from "vitest";
import { forgetSession } from "../../src/session";

beforeEach(() => {
  localStorage.clear();
  forgetSession();
});
