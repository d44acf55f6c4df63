/**
 * Reading a HuJSON policy file (JSON with comments and trailing commas) into
 * a value plus a syntax tree that maps any path in the value back to a line
 * and column. Parsing is jsonc-parser's; this file adds positions, duplicate
 * keys (ambiguous, so rejected as in Tailscale's HuJSON) and a nesting limit
 * checked before the (recursive) parser runs.
 */

import { createScanner, findNodeAtLocation, getNodeValue, parseTree, printParseErrorCode, type Node, type ParseError } from "jsonc-parser";

// jsonc-parser's SyntaxKind is a const enum, which isolated modules cannot import: its values.
const OPEN_BRACE = 1, CLOSE_BRACE = 2, OPEN_BRACKET = 3, CLOSE_BRACKET = 4, EOF = 17;

/** One problem in a policy file, pointing at the offending value. */
export interface PolicyIssue {
  /** Path in the document, e.g. "meshguard.rules[3].when.hours"; "" for the whole file. */
  path: string;
  /** 1-based line and column of the offending value (or of the nearest enclosing one). */
  line: number;
  column: number;
  /** What is wrong and what would be valid. */
  message: string;
}

export type PathKey = string | number;

/** MAX_DEPTH bounds nesting: a policy is never deep, and the parser recurses. */
export const MAX_DEPTH = 64;
/** MAX_BYTES bounds the file: larger input is almost certainly not a policy. */
export const MAX_BYTES = 16 * 1024 * 1024;

/** formatPath renders ["meshguard","rules",3,"when"] as "meshguard.rules[3].when". */
export function formatPath(path: readonly PathKey[]): string {
  let s = "";
  for (const k of path) {
    if (typeof k === "number") s += `[${k}]`;
    else if (/^[A-Za-z_$][\w$]*$/.test(k)) s += s ? `.${k}` : k;
    else s += `[${JSON.stringify(k)}]`;
  }
  return s;
}

/** SourceFile is a parsed HuJSON text with a position lookup. */
export class SourceFile {
  readonly value: unknown;
  private readonly lineStarts: number[];
  readonly text: string;
  private readonly root: Node | undefined;


  private constructor(
    text: string,
    root: Node | undefined,
  ) {
    this.text = text;
    this.root = root;
    this.value = root ? getNodeValue(root) : undefined;
    this.lineStarts = [0];
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) this.lineStarts.push(i + 1);
  }

  /** parse returns the file, or the list of syntax issues (never throws on bad input). */
  static parse(text: string): SourceFile | PolicyIssue[] {
    const probe = new SourceFile(text.length <= MAX_BYTES ? text : "", undefined);
    if (text.length > MAX_BYTES) return [{ path: "", line: 1, column: 1, message: `the file is larger than ${MAX_BYTES} bytes` }];
    const deep = tooDeep(text);
    if (deep !== undefined) {
      return [{ path: "", ...probe.position(deep), message: `nesting deeper than ${MAX_DEPTH} levels` }];
    }
    const errors: ParseError[] = [];
    const root = parseTree(text, errors, { allowTrailingComma: true, disallowComments: false, allowEmptyContent: false });
    if (errors.length > 0 || !root) {
      // Only the first syntax error: the parser's later ones are mostly echoes of it.
      const e = errors[0] ?? ({ error: 0, offset: 0, length: 0 } as unknown as ParseError);
      return [{ path: "", ...probe.position(e.offset), message: describeSyntax(e, text) }];
    }
    const file = new SourceFile(text, root);
    const dups = file.duplicateKeys();
    return dups.length ? dups : file;
  }

  /** position converts a character offset to a 1-based line and column. */
  position(offset: number): { line: number; column: number } {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - this.lineStarts[lo]! + 1 };
  }

  /**
   * locate returns the position of the value at `path`; for a path that does
   * not exist (a missing key) the position of the deepest enclosing value.
   * With `key`, the position of that property's key inside the object at path.
   */
  locate(path: readonly PathKey[], key?: string): { line: number; column: number } {
    if (!this.root) return { line: 1, column: 1 };
    for (let n = path.length; n >= 0; n--) {
      const node = findNodeAtLocation(this.root, path.slice(0, n) as PathKey[]);
      if (!node) continue;
      if (key !== undefined && n === path.length && node.type === "object") {
        const prop = node.children?.find((p) => p.children?.[0]?.value === key);
        if (prop?.children?.[0]) return this.position(prop.children[0].offset);
      }
      return this.position(node.offset);
    }
    return this.position(this.root.offset);
  }

  private duplicateKeys(): PolicyIssue[] {
    const out: PolicyIssue[] = [];
    const path: PathKey[] = []; // one stack, not a new array per node
    const walk = (node: Node): void => {
      if (node.type === "object") {
        const seen = new Set<string>();
        for (const prop of node.children ?? []) {
          const k = prop.children?.[0]?.value as string;
          if (seen.has(k)) {
            out.push({ path: formatPath(path), ...this.position(prop.offset), message: `duplicate key ${JSON.stringify(k)}: each key may appear once in an object` });
          }
          seen.add(k);
          const v = prop.children?.[1];
          if (v && (v.type === "object" || v.type === "array")) {
            path.push(k);
            walk(v);
            path.pop();
          }
        }
      } else if (node.type === "array") {
        const items = node.children ?? [];
        for (let i = 0; i < items.length; i++) {
          const c = items[i]!;
          if (c.type !== "object" && c.type !== "array") continue;
          path.push(i);
          walk(c);
          path.pop();
        }
      }
    };
    if (this.root) walk(this.root);
    return out;
  }
}

/** tooDeep scans tokens (no recursion) and returns the offset where nesting exceeds MAX_DEPTH. */
function tooDeep(text: string): number | undefined {
  const sc = createScanner(text, true);
  let depth = 0;
  for (let t: number = sc.scan(); t !== EOF; t = sc.scan()) {
    if (t === OPEN_BRACE || t === OPEN_BRACKET) {
      if (++depth > MAX_DEPTH) return sc.getTokenOffset();
    } else if (t === CLOSE_BRACE || t === CLOSE_BRACKET) depth = Math.max(0, depth - 1);
  }
  return undefined;
}

const SYNTAX_HINTS: Record<string, string> = {
  InvalidSymbol: "unexpected character",
  InvalidNumberFormat: "malformed number",
  PropertyNameExpected: 'expected a property name in double quotes, e.g. "rules"',
  ValueExpected: "expected a value",
  ColonExpected: 'expected ":" after the property name',
  CommaExpected: 'expected "," between items',
  CloseBraceExpected: 'expected "}" to close the object',
  CloseBracketExpected: 'expected "]" to close the list',
  EndOfFileExpected: "expected the end of the file after the top-level value",
  InvalidCommentToken: "malformed comment",
  UnexpectedEndOfComment: "unterminated /* comment",
  UnexpectedEndOfString: "unterminated string",
  UnexpectedEndOfNumber: "malformed number",
  InvalidUnicode: "invalid \\u escape",
  InvalidEscapeCharacter: "invalid escape in a string",
  InvalidCharacter: "invalid character in a string (control characters must be escaped)",
};

function describeSyntax(e: ParseError, text: string): string {
  if (text.trim() === "") return "the file is empty: a policy is a JSON object";
  const name = printParseErrorCode(e.error);
  const near = text.slice(e.offset, e.offset + Math.min(Math.max(e.length, 1), 20)).replace(/\s+/g, " ");
  return `syntax error: ${SYNTAX_HINTS[name] ?? name}${near ? ` near ${JSON.stringify(near)}` : ""}`;
}
