/**
 * Path globs of token locations, and the two questions the token issuer asks
 * of them: is every path one glob matches also matched by another
 * (containment), and is there a path both match (overlap)?
 *
 * The glob language (deliberately small, so both questions have exact
 * answers):
 * - `**` (two or more `*` in a row) matches any string, "/" included, the
 *   empty string too: `/v2/**` matches `/v2/` and `/v2/a/b` (not `/v2`).
 * - `*` matches any string without "/", the empty string too: `/v2/*`
 *   matches `/v2/` and `/v2/a`, not `/v2/a/b`.
 * - every other character stands for itself (no `?`, classes or escapes).
 *
 * Algorithm. A glob is a nondeterministic automaton whose states are
 * positions in its token list: a literal moves on its character, `*` loops on
 * any character but "/", `**` loops on any character, and either wildcard
 * may also be skipped (the empty match). Only finitely many characters
 * matter: those written in either glob, "/", and one character written in
 * neither (every such character behaves the same in both automata). A
 * breadth-first walk of the product of the two subset constructions over
 * that alphabet visits every pair of states the two globs can be in after
 * the same input:
 * - A ⊆ B fails exactly when some reachable pair has A accepting and B not;
 * - A and B overlap exactly when some reachable pair has both accepting.
 * The walk keeps the input that reached each pair, so a "no" comes with a
 * witness: the shortest path one glob matches and the other does not (or
 * that both match). Sound and complete for this language: the answer is the
 * language question itself, not a heuristic. States are bounded (MAX_STATES);
 * a walk that exceeds the bound answers `undefined` and callers fail closed.
 */

/** A glob token: a character code, STAR (`*`) or DSTAR (`**`). */
type Token = number;
const STAR = -1;
const DSTAR = -2;
const SLASH = 47;

/** The longest glob accepted (characters); a location longer than this is refused when parsed. */
export const MAX_GLOB_LENGTH = 1024;
/** The most product states one question may visit before it gives up (answers undefined). */
const MAX_STATES = 200_000;

/** tokenize splits a glob into tokens: runs of 2+ `*` are one DSTAR. */
function tokenize(glob: string): Token[] {
  const out: Token[] = [];
  for (let i = 0; i < glob.length; i++) {
    const c = glob.charCodeAt(i);
    if (c !== 42 /* * */) {
      out.push(c);
      continue;
    }
    let j = i;
    while (j + 1 < glob.length && glob.charCodeAt(j + 1) === 42) j++;
    out.push(j > i ? DSTAR : STAR);
    i = j;
  }
  return out;
}

/**
 * A subset state of one glob's automaton: a sorted list of positions,
 * closed under skipping wildcards. Position `tokens.length` accepts.
 */
type Subset = number[];

function closure(tokens: Token[], positions: Iterable<number>): Subset {
  const seen = new Set<number>();
  const stack = [...positions];
  while (stack.length) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    if (p < tokens.length && tokens[p]! < 0) stack.push(p + 1);
  }
  return [...seen].sort((a, b) => a - b);
}

function step(tokens: Token[], s: Subset, c: number): Subset {
  const next: number[] = [];
  for (const p of s) {
    if (p >= tokens.length) continue;
    const t = tokens[p]!;
    if (t === DSTAR || (t === STAR && c !== SLASH)) next.push(p);
    else if (t === c) next.push(p + 1);
  }
  return closure(tokens, next);
}

const accepts = (tokens: Token[], s: Subset): boolean => s.length > 0 && s[s.length - 1] === tokens.length;

/** The characters that matter for two globs: theirs, "/", and one neither writes. */
function alphabet(a: Token[], b: Token[]): number[] {
  const set = new Set<number>([SLASH]);
  for (const t of [...a, ...b]) if (t >= 0) set.add(t);
  // A readable stand-in for "any other character", so a witness prints well.
  const other = [..."xyzqkw0123456789_-~"].map((ch) => ch.charCodeAt(0)).find((c) => !set.has(c));
  set.add(other ?? 0x2603);
  return [...set];
}

/** The outcome of walking two globs' product: the first input that satisfies `stop`, or none. */
function search(a: string, b: string, stop: (aAcc: boolean, bAcc: boolean) => boolean): { found: string | undefined; gaveUp: boolean } {
  const ta = tokenize(a);
  const tb = tokenize(b);
  const sigma = alphabet(ta, tb);
  const start: [Subset, Subset] = [closure(ta, [0]), closure(tb, [0])];
  const key = (x: Subset, y: Subset) => `${x.join(",")}|${y.join(",")}`;
  const seen = new Map<string, string>([[key(...start), ""]]);
  let frontier: Array<[Subset, Subset, string]> = [[start[0], start[1], ""]];
  while (frontier.length) {
    const next: Array<[Subset, Subset, string]> = [];
    for (const [x, y, input] of frontier) {
      if (stop(accepts(ta, x), accepts(tb, y))) return { found: input, gaveUp: false };
      // A dead A (no positions) can never accept again: nothing below it matters.
      if (x.length === 0) continue;
      for (const c of sigma) {
        const nx = step(ta, x, c);
        const ny = step(tb, y, c);
        const k = key(nx, ny);
        if (seen.has(k)) continue;
        const w = input + String.fromCharCode(c);
        seen.set(k, w);
        if (seen.size > MAX_STATES) return { found: undefined, gaveUp: true };
        next.push([nx, ny, w]);
      }
    }
    frontier = next;
  }
  return { found: undefined, gaveUp: false };
}

/** The answer to a containment or overlap question, with a path that shows a "no" (or an overlap). */
export interface GlobAnswer {
  /** true/false; undefined when the globs are too complex to decide within the bound (callers fail closed). */
  answer: boolean | undefined;
  /** For containment: a path `inner` matches and `outer` does not. For overlap: a path both match. */
  witness?: string;
}

/**
 * Answers are remembered (a pure function of the two globs): an issuer is
 * asked about the same few (rule location, requested location) pairs over
 * and over, and a walk costs tens of microseconds. Bounded; the oldest
 * answers are forgotten first.
 */
const MEMO_MAX = 10_000;
const memo = new Map<string, Readonly<GlobAnswer>>();

function remembered(key: string, compute: () => GlobAnswer): GlobAnswer {
  const hit = memo.get(key);
  if (hit) return hit;
  const r = Object.freeze(compute());
  memo.set(key, r);
  if (memo.size > MEMO_MAX) memo.delete(memo.keys().next().value!);
  return r;
}

/** globContains: does every path `inner` matches also match `outer`? */
export function globContains(outer: string, inner: string): GlobAnswer {
  if (outer === inner || outer === "**") return { answer: true };
  return remembered(`c\n${outer}\n${inner}`, () => {
    const r = search(inner, outer, (innerAcc, outerAcc) => innerAcc && !outerAcc);
    if (r.gaveUp) return { answer: undefined };
    return r.found === undefined ? { answer: true } : { answer: false, witness: r.found };
  });
}

/** globsOverlap: is there a path both globs match? */
export function globsOverlap(a: string, b: string): GlobAnswer {
  return remembered(`o\n${a}\n${b}`, () => {
    const r = search(a, b, (x, y) => x && y);
    if (r.gaveUp) return { answer: undefined };
    return r.found === undefined ? { answer: false } : { answer: true, witness: r.found };
  });
}

/**
 * compileGlob turns a glob into a matcher of whole paths (a RegExp: `**` is
 * `.*`, `*` is `[^/]*`, everything else literal). It answers as the automaton
 * above does (test/tokens/contain.test.ts checks the two agree).
 */
export function compileGlob(glob: string): (path: string) => boolean {
  let src = "";
  for (const t of tokenize(glob)) src += t === DSTAR ? "[\\s\\S]*" : t === STAR ? "[^/]*" : escapeChar(t);
  const re = new RegExp(`^${src}$`);
  return (path) => re.test(path);
}

function escapeChar(c: number): string {
  const ch = String.fromCharCode(c);
  return /[\\^$.*+?()[\]{}|/-]/.test(ch) ? `\\${ch}` : ch;
}

/** globMatches: does the glob match this exact path? (The automaton itself; compileGlob is the fast form.) */
export function globMatches(glob: string, path: string): boolean {
  const t = tokenize(glob);
  let s = closure(t, [0]);
  for (let i = 0; i < path.length && s.length; i++) s = step(t, s, path.charCodeAt(i));
  return accepts(t, s);
}
