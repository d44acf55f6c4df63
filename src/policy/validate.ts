/**
 * Validating a parsed policy file: zod for the shape, semantics.ts for the
 * rest, and every issue turned into a PolicyIssue that names the path, the
 * line and column of the offending value, and what would be valid.
 */

import type { z } from "zod";
import { checkSemantics, type RawIssue } from "./semantics.js";
import { CombinedPolicySchema, MESHGUARD_KEY, MeshguardPartSchema, type MeshguardPart } from "./schema.js";
import { formatPath, type PathKey, type PolicyIssue, type SourceFile } from "./source.js";

/** A validated policy document. */
export interface PolicyDocument {
  /** meshguard's part (the whole file, or the value under "meshguard"). */
  part: MeshguardPart;
  /** Path of the part in the file: [] or ["meshguard"]. */
  base: PathKey[];
  /** Groups from the tailnet part and the meshguard part, merged. */
  groups: Record<string, string[]>;
  /** The whole file's value. */
  root: Record<string, unknown>;
}

/** validate returns the document or every issue found. */
export function validate(src: SourceFile): PolicyDocument | PolicyIssue[] {
  const root = src.value;
  if (typeof root !== "object" || root === null || Array.isArray(root)) {
    return [{ path: "", ...src.locate([]), message: `a policy is a JSON object, not ${Array.isArray(root) ? "a list" : root === null ? "null" : typeof root}` }];
  }
  const combined = Object.hasOwn(root, MESHGUARD_KEY);
  const base: PathKey[] = combined ? [MESHGUARD_KEY] : [];
  const schema = combined ? CombinedPolicySchema : MeshguardPartSchema;
  const r = schema.safeParse(root);
  if (!r.success) return r.error.issues.flatMap((i) => fromZod(i, src, root));
  const part = (combined ? (r.data as { meshguard: MeshguardPart }).meshguard : r.data) as MeshguardPart;
  const outer = combined ? ((r.data as { groups?: Record<string, string[]> }).groups ?? {}) : {};
  const groups: Record<string, string[]> = { ...outer };
  const raw: RawIssue[] = [];
  for (const [g, members] of Object.entries(part.groups ?? {})) {
    if (Object.hasOwn(outer, g)) raw.push({ path: [...base, "groups", g], message: `group "${g}" is also defined in the tailnet policy's groups: define it once` });
    groups[g] = members;
  }
  raw.push(...checkSemantics(part, groups, base));
  if (raw.length) return raw.map((i) => ({ path: formatPath(i.path), ...src.locate(i.path, i.key), message: i.message }));
  return { part, base, groups, root: root as Record<string, unknown> };
}

function valueAt(root: unknown, path: readonly PathKey[]): unknown {
  let v: unknown = root;
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined;
    v = (v as Record<string | number, unknown>)[k];
  }
  return v;
}

function show(v: unknown): string {
  const s = JSON.stringify(v);
  if (s === undefined) return String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

const typeName = (v: unknown) => (v === null ? "null" : Array.isArray(v) ? "a list" : typeof v === "object" ? "an object" : typeof v);

/** fromZod turns one zod issue into PolicyIssues (one per unknown key). */
function fromZod(i: z.ZodIssue, src: SourceFile, root: unknown): PolicyIssue[] {
  const path = i.path as PathKey[];
  const got = valueAt(root, path);
  const issue = (message: string, key?: string): PolicyIssue => {
    const p = key === undefined ? path : [...path, key];
    return { path: formatPath(p), ...src.locate(path, key), message };
  };
  switch (i.code) {
    case "unrecognized_keys":
      return i.keys.map((k) => issue(`unknown key "${k}"; ${i.message}`, k));
    case "invalid_type":
      if (got === undefined) return [issue(`missing: expected ${i.expected}`)];
      return [issue(`expected ${i.expected}, got ${typeName(got)} ${show(got)}`)];
    case "invalid_union": {
      // Report the branch that fits the value's type best: its issues are the actionable ones.
      const branches = i.unionErrors.map((e) => e.issues);
      const fitting = branches.filter((b) => !b.every((x) => x.code === "invalid_type" && x.path.length === path.length));
      if (fitting.length === 1) return fitting[0]!.flatMap((x) => fromZod(x, src, root));
      const expected = [...new Set(branches.flatMap((b) => b.filter((x) => x.code === "invalid_type").map((x) => (x as z.ZodInvalidTypeIssue).expected)))];
      return [issue(`expected ${expected.join(" or ") || "another value"}, got ${typeName(got)} ${show(got)}`)];
    }
    case "invalid_literal":
    case "invalid_enum_value":
      return [issue(`${i.message}, got ${show(got)}`)];
    default:
      return [issue(got === undefined ? i.message : `${i.message} (got ${show(got)})`)];
  }
}
