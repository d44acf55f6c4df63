/**
 * Time windows with an injectable clock: boundaries (start included, end
 * excluded, wrap past midnight, 24:00), weekdays in a zone, and the 2026
 * daylight-saving changes in America/New_York (Mar 8: 02:00 → 03:00;
 * Nov 1: 02:00 → 01:00) and Australia/Lord_Howe (a 30-minute shift).
 */

import { describe, expect, test } from "vitest";

import { loadPolicy, parseRequest } from "../../src/policy/index.js";

/** allowedAt builds a one-rule policy with `when` and reports whether a call at each ISO time is allowed. */
function allowedAt(when: object, times: string[]): boolean[] {
  let now = new Date(0);
  const policy = loadPolicy(JSON.stringify({ version: 1, rules: [{ src: ["*"], http: { host: ["*"] }, when }] }), { clock: () => now });
  return times.map((iso) => {
    now = new Date(iso);
    return policy.evaluate({ principal: { tags: ["tag:a"] }, target: parseRequest("GET https://a.example/") }).effect === "allow";
  });
}

describe("hours in UTC", () => {
  test("09:00-17:00 includes 09:00:00.000 and excludes 17:00:00.000", () => {
    expect(allowedAt({ hours: "09:00-17:00" }, ["2026-03-09T08:59:59.999Z", "2026-03-09T09:00:00.000Z", "2026-03-09T16:59:59.999Z", "2026-03-09T17:00:00.000Z"])).toEqual([false, true, true, false]);
  });
  test("22:00-06:00 wraps past midnight", () => {
    expect(allowedAt({ hours: "22:00-06:00" }, ["2026-03-09T21:59:00Z", "2026-03-09T22:00:00Z", "2026-03-10T00:00:00Z", "2026-03-10T05:59:59Z", "2026-03-10T06:00:00Z"])).toEqual([false, true, true, true, false]);
  });
  test("00:00-24:00 is the whole day; several windows are alternatives", () => {
    expect(allowedAt({ hours: "00:00-24:00" }, ["2026-03-09T00:00:00Z", "2026-03-09T23:59:59.999Z"])).toEqual([true, true]);
    expect(allowedAt({ hours: ["08:00-09:00", "12:00-12:30"] }, ["2026-03-09T08:30:00Z", "2026-03-09T10:00:00Z", "2026-03-09T12:29:00Z", "2026-03-09T12:30:00Z"])).toEqual([true, false, true, false]);
  });
  test("weekdays: Monday 2026-03-09 allowed, Sunday 2026-03-08 not", () => {
    expect(allowedAt({ weekdays: ["mon", "tue", "wed", "thu", "fri"] }, ["2026-03-09T00:00:00Z", "2026-03-08T23:59:59Z"])).toEqual([true, false]);
  });
});

describe("named time zones", () => {
  const ny = (when: object) => ({ ...when, timeZone: "America/New_York" });

  test("the weekday is the zone's: Monday 02:00 UTC is still Sunday in New York", () => {
    expect(allowedAt(ny({ weekdays: ["sun"] }), ["2026-03-09T02:00:00Z", "2026-03-09T04:00:00Z"])).toEqual([true, false]);
  });

  test("09:00-17:00 New York moves from 14:00-22:00 UTC (EST) to 13:00-21:00 UTC (EDT) on 2026-03-08", () => {
    const w = ny({ hours: "09:00-17:00" });
    expect(allowedAt(w, ["2026-03-07T13:59:00Z", "2026-03-07T14:00:00Z", "2026-03-07T21:59:00Z", "2026-03-07T22:00:00Z"])).toEqual([false, true, true, false]);
    expect(allowedAt(w, ["2026-03-08T12:59:00Z", "2026-03-08T13:00:00Z", "2026-03-08T20:59:00Z", "2026-03-08T21:00:00Z"])).toEqual([false, true, true, false]);
  });

  test("on 2026-03-08 the skipped hour 02:00-03:00 never happens in New York", () => {
    const w = ny({ hours: "02:00-03:00" });
    // 06:59 UTC is 01:59 EST; 07:00 UTC is 03:00 EDT.
    expect(allowedAt(w, ["2026-03-08T06:59:59Z", "2026-03-08T07:00:00Z", "2026-03-08T07:30:00Z"])).toEqual([false, false, false]);
    // The day before, 02:00 EST is 07:00 UTC.
    expect(allowedAt(w, ["2026-03-07T07:00:00Z"])).toEqual([true]);
  });

  test("on 2026-11-01 the repeated hour 01:00-02:00 happens twice in New York (05:00-07:00 UTC)", () => {
    const w = ny({ hours: "01:00-02:00" });
    expect(allowedAt(w, ["2026-11-01T04:59:59Z", "2026-11-01T05:00:00Z", "2026-11-01T05:59:59Z", "2026-11-01T06:00:00Z", "2026-11-01T06:59:59Z", "2026-11-01T07:00:00Z"])).toEqual([
      false,
      true,
      true,
      true,
      true,
      false,
    ]);
  });

  test("a 30-minute DST shift (Australia/Lord_Howe, 2026-04-05 02:00 → 01:30)", () => {
    // +11:00 until 2026-04-04T15:00Z, then +10:30: local 01:30-02:00 happens twice.
    const w = { hours: "01:30-02:00", timeZone: "Australia/Lord_Howe" };
    expect(allowedAt(w, ["2026-04-04T14:29:00Z", "2026-04-04T14:30:00Z", "2026-04-04T14:59:00Z", "2026-04-04T15:00:00Z", "2026-04-04T15:29:00Z", "2026-04-04T15:30:00Z"])).toEqual([
      false,
      true,
      true,
      true,
      true,
      false,
    ]);
  });

  test("a request's own `now` wins over the clock", () => {
    const policy = loadPolicy(JSON.stringify({ version: 1, rules: [{ src: ["*"], http: { host: ["*"] }, when: { hours: "09:00-10:00" } }] }), { clock: () => new Date("2026-01-01T12:00:00Z") });
    const r = { principal: { tags: [] }, target: parseRequest("GET https://a/") };
    expect(policy.evaluate(r).effect).toBe("deny");
    expect(policy.evaluate({ ...r, now: new Date("2026-01-01T09:30:00Z") }).effect).toBe("allow");
  });
});
