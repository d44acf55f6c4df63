/**
 * Checks that relate several fields of a policy whose shape zod accepted:
 * one target kind per rule, conditions that fit the kind and the effect,
 * host patterns, port ranges and time zones that exist, groups that are
 * defined, rule ids that are unique, and tests that can be read. Each
 * problem becomes an issue with its path; all are collected.
 */

import { GROUP_RE } from "./schema.js";
import { parseHostPattern } from "./hosts.js";
import { parseDnsNamePattern, parseServerPattern } from "./dns.js";
import { parsePrincipal } from "./identity.js";
import { parseRequest } from "./request.js";
import { ruleId } from "./compile.js";
import { zoneIsValid } from "./time.js";
import { tokenRuleIssues } from "./token-semantics.js";
import type { PathKey } from "./source.js";
import type { MeshguardPart } from "./schema.js";

export interface RawIssue {
  path: PathKey[];
  message: string;
  /** Point at this key of the object at `path` instead of its value. */
  key?: string;
}

/** checkSemantics returns every cross-field problem; `base` is the path of the meshguard part in the file. */
export function checkSemantics(part: MeshguardPart, groups: Record<string, string[]>, base: PathKey[]): RawIssue[] {
  const issues: RawIssue[] = [];
  const at = (path: PathKey[], message: string, key?: string) => issues.push(key === undefined ? { path: [...base, ...path], message } : { path: [...base, ...path], message, key });
  const ids = new Map<string, number>();

  part.rules.forEach((r, i) => {
    const p: PathKey[] = ["rules", i];
    const kinds = (["http", "tcp", "mcp", "llm", "dns", "udp", "token", "sql"] as const).filter((k) => r[k] !== undefined);
    if (kinds.length !== 1) {
      at(p, kinds.length === 0 ? "a rule needs exactly one target: http, tcp, mcp, llm, dns, udp, token or sql" : `a rule has exactly one target, this one has ${kinds.join(" and ")}: split it into ${kinds.length} rules`);
    }
    if (r.token !== undefined) {
      if (part.version < 4) at(p, `token rules need "version": 4 (version ${part.version} has no token rules): change "version" to 4`, "token");
      for (const issue of tokenRuleIssues(r)) at([...p, ...issue.path], issue.message, issue.key);
    }
    if (r.sql !== undefined) {
      if (part.version < 5) at(p, `sql rules need "version": 5 (version ${part.version} has no sql rules): change "version" to 5`, "sql");
      const settingsOnly = r.sql.operation.every((o) => o === "set");
      r.sql.table.forEach((t, j) => {
        // Objects are schema-qualified: "users" would never match "public.users" (settings have no schema).
        if (!settingsOnly && t !== "*" && t !== "" && !t.includes(".")) at([...p, "sql", "table", j], `"${t}" names no schema, so it matches no table or function (they are schema-qualified): write "public.${t}" or "*.${t}"`);
      });
      if (r.sql.rows !== undefined && r.effect === "deny") at([...p, "sql"], "a deny rule cannot have a row filter (rows filters what allow and approve rules let through)", "rows");
      if (r.effect === "deny" && r.sql.columns !== undefined) at([...p, "sql"], "a deny rule cannot list columns (it would deny only statements within them): put columns on the allow rule", "columns");
    }
    // Version 1 files keep their meaning: the kinds version 2 added are an error there, not silently read.
    for (const k of ["dns", "udp"] as const) {
      if (r[k] !== undefined && part.version < 2) at(p, `${k} rules need "version": 2 (a version-1 policy cannot name ${k} targets): change "version" to 2`, k);
    }
    const id = ruleId(r, i);
    if (ids.has(id)) at([...p, "id"], `duplicate rule id "${id}" (also rules[${ids.get(id)}])`);
    else ids.set(id, i);

    r.src.forEach((s, j) => {
      if (GROUP_RE.test(s) && !Object.hasOwn(groups, s)) at([...p, "src", j], `group "${s}" is not defined: add it to "groups"${Object.keys(groups).length ? ` (defined: ${Object.keys(groups).join(", ")})` : ""}`);
    });
    r.dns?.name.forEach((n, j) => {
      const np = parseDnsNamePattern(n);
      if (typeof np === "string") at([...p, "dns", "name", j], np);
    });
    r.dns?.server?.forEach((x, j) => {
      const sp = parseServerPattern(x);
      if (typeof sp === "string") at([...p, "dns", "server", j], sp);
    });
    for (const k of ["http", "tcp", "udp"] as const) {
      r[k]?.host.forEach((h, j) => {
        const hp = parseHostPattern(h);
        if (typeof hp === "string") at([...p, k, "host", j], hp);
      });
      r[k]?.port?.forEach((port, j) => {
        if (typeof port === "string" && port.includes("-")) {
          const [lo, hi] = port.split("-").map(Number) as [number, number];
          if (!(lo >= 1 && hi <= 65535 && lo <= hi)) at([...p, k, "port", j], `port range "${port}" must be LOW-HIGH with 1 ≤ LOW ≤ HIGH ≤ 65535`);
        } else if (typeof port === "string" && port !== "*" && !(Number(port) >= 1 && Number(port) <= 65535)) {
          at([...p, k, "port", j], "ports are 1-65535");
        }
      });
    }
    const w = r.when;
    if (w) {
      if (w.timeZone !== undefined && !zoneIsValid(w.timeZone)) at([...p, "when", "timeZone"], `unknown time zone "${w.timeZone}": use an IANA name such as "UTC", "Europe/Berlin" or "America/New_York"`);
      if (w.timeZone !== undefined && w.hours === undefined && w.weekdays === undefined) at([...p, "when", "timeZone"], "timeZone only applies to hours and weekdays: add them or remove timeZone");
      if (!r.http && w.headers !== undefined) at([...p, "when"], "header conditions apply to http rules only", "headers");
      if (!r.http && w.maxBodyBytes !== undefined) at([...p, "when"], "maxBodyBytes applies to http rules only", "maxBodyBytes");
      if (r.effect === "deny" && w.maxBodyBytes !== undefined) at([...p, "when"], "a deny rule cannot limit the body size (it would deny only small bodies): put maxBodyBytes on the allow rule", "maxBodyBytes");
      if (r.effect === "deny" && w.rate !== undefined) at([...p, "when"], "a deny rule cannot have a rate: rates limit what allow and approve rules let through", "rate");
    }
    if (r.effect === "deny" && r.llm?.maxTokens !== undefined) at([...p, "llm"], "a deny rule cannot limit max tokens (it would deny only small requests): put maxTokens on the allow rule", "maxTokens");
    if (r.mcp !== undefined) {
      const items = (["tool", "resource", "prompt"] as const).filter((k) => r.mcp![k] !== undefined);
      if (items.length !== 1) at([...p, "mcp"], items.length === 0 ? 'an mcp rule names what it is about: "tool" (tools/call), "resource" (resources/read) or "prompt" (prompts/get)' : `an mcp rule names exactly one of tool, resource and prompt, this one has ${items.join(" and ")}: split it into ${items.length} rules`);
      // Version 5 and older know tools only: a resource or prompt rule there is an error, not silently read.
      for (const k of ["resource", "prompt"] as const) if (r.mcp[k] !== undefined && part.version < 6) at([...p, "mcp"], `mcp ${k} rules need "version": 6 (version ${part.version} has tool rules only): change "version" to 6`, k);
      if (r.mcp.resource !== undefined && r.mcp.args !== undefined) at([...p, "mcp"], "a resource read has no arguments: args apply to tool and prompt rules", "args");
    }
    r.mcp &&
      Object.entries(r.mcp.args ?? {}).forEach(([name, c]) => {
        if (typeof c === "object" && Object.keys(c).length === 0) at([...p, "mcp", "args", name], "an argument constraint needs at least one of glob, in, min, max, maxLength");
      });
  });

  if (part.gateway !== undefined) {
    // As with dns/udp in version 1: an older version names no gateway section, so it is an error, not silently read.
    if (part.version < 3) at([], `a "gateway" section needs "version": 3 (version ${part.version} has no gateway roles): change "version" to 3`, "gateway");
    part.gateway.roles.forEach((g, i) => {
      g.src.forEach((s, j) => {
        if (GROUP_RE.test(s) && !Object.hasOwn(groups, s)) at(["gateway", "roles", i, "src", j], `group "${s}" is not defined: add it to "groups"${Object.keys(groups).length ? ` (defined: ${Object.keys(groups).join(", ")})` : ""}`);
      });
    });
  }

  (part.tests ?? []).forEach((tc, i) => {
    const p: PathKey[] = ["tests", i];
    try {
      parsePrincipal(tc.as);
    } catch (err) {
      at([...p, "as"], (err as Error).message.split("\n")[0]!);
    }
    try {
      const t = parseRequest(tc.request);
      if (tc.rowFilters !== undefined && t.kind !== "sql") at([...p, "rowFilters"], "rowFilters applies to sql requests only");
    } catch (err) {
      at([...p, "request"], (err as Error).message.split("\n")[0]!);
    }
    if (tc.ruleId !== undefined && tc.rule !== undefined && tc.ruleId !== tc.rule) at([...p, "rule"], `"rule" is the old spelling of "ruleId" and names another rule ("${tc.rule}" vs "${tc.ruleId}"): keep only ruleId`);
    const want = tc.ruleId ?? tc.rule;
    if (want !== undefined && !ids.has(want)) at([...p, tc.ruleId !== undefined ? "ruleId" : "rule"], `no rule has the id "${want}"`);
  });
  return issues;
}
