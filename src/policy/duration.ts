/**
 * Durations as people write them in a config file: "30d", "12h", "90m",
 * "45s", "500ms", or a sum such as "1d12h". A bare number is refused: "30"
 * could mean seconds or days, and a retention setting that guesses wrong
 * deletes logs. Shared by the gateway config and the policy (a token rule's
 * `maxTtl`): one syntax for durations everywhere.
 */

const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

const PART_RE = /(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/gy;

/** parseDuration returns the milliseconds of a duration string, or undefined when it is not one (or is zero). */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (s === "") return undefined;
  PART_RE.lastIndex = 0;
  let total = 0;
  let end = 0;
  for (let m = PART_RE.exec(s); m; m = PART_RE.exec(s)) {
    total += Number(m[1]) * UNIT_MS[m[2]!]!;
    end = PART_RE.lastIndex;
  }
  if (end !== s.length || !(total > 0) || !Number.isFinite(total)) return undefined;
  return Math.round(total);
}

/** The message a config error shows for a value parseDuration refused. */
export const DURATION_HINT = 'must be a duration such as "30d", "12h", "90m", "45s" or "1d12h" (units: ms, s, m, h, d, w)';
