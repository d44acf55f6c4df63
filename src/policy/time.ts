/**
 * Time windows: hours and weekdays in UTC or an IANA time zone.
 *
 * Asking Intl for a zone's wall-clock time costs microseconds, so a zone's
 * UTC offset is looked up once per 15-minute block of UTC time and reused:
 * every offset change in the tz database since 1970 happens on a 15-minute
 * boundary of UTC, so inside a block the offset is constant. The local
 * minute-of-day and weekday then come from arithmetic.
 *
 * Semantics: "HH:MM-HH:MM" includes the start minute and excludes the end
 * ("09:00-17:00" is 09:00:00 to 16:59:59); "24:00" ends at midnight; a start
 * after the end wraps past midnight ("22:00-06:00"). Weekdays are those of
 * the local date at the instant of the call. On a daylight-saving change the
 * wall clock decides: a window over the skipped hour is shorter that day, one
 * over the repeated hour longer.
 */

import { WEEKDAYS, type Weekday } from "./schema.js";

const BLOCK_MS = 15 * 60_000;

/** zoneIsValid tells whether Intl knows the IANA zone name. */
export function zoneIsValid(tz: string): boolean {
  try {
    new Intl.DateTimeFormat("en-US", { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

/** ZoneClock turns an instant into the local minute-of-day and weekday of one zone. */
export class ZoneClock {
  private readonly fmt: Intl.DateTimeFormat | undefined;
  private block = NaN;
  private offsetMs = 0;
  readonly zone: string;

  constructor(zone: string) {
    this.zone = zone;
    this.fmt =
      zone === "UTC" || zone === "Etc/UTC"
        ? undefined
        : new Intl.DateTimeFormat("en-US", { timeZone: zone, hourCycle: "h23", year: "numeric", month: "numeric", day: "numeric", hour: "numeric", minute: "numeric" });
  }

  /** local returns minutes since local midnight (0..1439) and the local weekday (0 = Sunday). */
  local(ms: number): { minute: number; weekday: number } {
    const t = ms + this.offset(ms);
    const dayMs = 86_400_000;
    const days = Math.floor(t / dayMs);
    const minute = Math.floor((t - days * dayMs) / 60_000);
    // 1970-01-01 was a Thursday (4).
    const weekday = (((days + 4) % 7) + 7) % 7;
    return { minute, weekday };
  }

  private offset(ms: number): number {
    if (!this.fmt) return 0;
    const block = Math.floor(ms / BLOCK_MS);
    if (block !== this.block) {
      const start = block * BLOCK_MS;
      let y = 0, mo = 0, d = 0, h = 0, mi = 0;
      for (const p of this.fmt.formatToParts(start)) {
        const v = Number(p.value);
        if (p.type === "year") y = v;
        else if (p.type === "month") mo = v;
        else if (p.type === "day") d = v;
        else if (p.type === "hour") h = v;
        else if (p.type === "minute") mi = v;
      }
      this.offsetMs = Date.UTC(y, mo - 1, d, h, mi) - start;
      this.block = block;
    }
    return this.offsetMs;
  }
}

/** A compiled `when` time condition. */
export interface TimeWindow {
  clock: ZoneClock;
  /** [start, end) minute ranges; an end ≤ start wraps past midnight. */
  ranges: Array<[number, number]>;
  /** Bit i set = weekday i allowed (0 = Sunday); 0x7f = every day. */
  days: number;
  text: string;
}

const minutes = (hhmm: string) => Number(hhmm.slice(0, 2)) * 60 + Number(hhmm.slice(3, 5));

/** compileWindow builds a TimeWindow; clocks are shared per zone through `clocks`. */
export function compileWindow(hours: string | string[] | undefined, weekdays: Weekday[] | undefined, zone: string, clocks: Map<string, ZoneClock>): TimeWindow {
  let clock = clocks.get(zone);
  if (!clock) clocks.set(zone, (clock = new ZoneClock(zone)));
  const list = hours === undefined ? [] : typeof hours === "string" ? [hours] : hours;
  const ranges = list.map((h) => [minutes(h.slice(0, 5)), minutes(h.slice(6))] as [number, number]);
  let days = 0x7f;
  if (weekdays) days = weekdays.reduce((acc, d) => acc | (1 << WEEKDAYS.indexOf(d)), 0);
  const text = [list.length ? list.join(", ") : "", weekdays ? weekdays.join(",") : "", zone].filter(Boolean).join(" ");
  return { clock, ranges, days, text };
}

/** inWindow tells whether the instant `ms` falls in the window. */
export function inWindow(w: TimeWindow, ms: number): boolean {
  const { minute, weekday } = w.clock.local(ms);
  if (!(w.days & (1 << weekday))) return false;
  if (w.ranges.length === 0) return true;
  for (const [s, e] of w.ranges) {
    if (s < e ? minute >= s && minute < e : minute >= s || minute < e) return true;
  }
  return false;
}
