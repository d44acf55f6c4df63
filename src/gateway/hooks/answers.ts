/**
 * What a guardrail hook may answer, validated with zod. Fields beyond those
 * listed are ignored (a hook may add its own, e.g. for its logs); a body
 * that is not one of these answers is "malformed", handled like any other
 * failure of the hook (its `failure` setting decides).
 */

import { z } from "zod";
import type { PostHookResult, PreHookResult } from "../types.js";
import { HookFailedError, type HookPhase } from "./call.js";

/** A hook's block answers with a 4xx (5xx statuses are kept for a hook that failed: 502/503). */
const DEFAULT_BLOCK_STATUS = 403;

const block = z.object({
  action: z.literal("block"),
  status: z.number().int().min(400, "must be a 4xx status").max(499, "must be a 4xx status").default(DEFAULT_BLOCK_STATUS),
  message: z.string().max(4096, "must be at most 4096 characters").optional(),
});

const withBody = <A extends string>(action: A) =>
  z.object({ action: z.literal(action), body: z.unknown().refine((b) => b !== undefined, "is required") });

const actionError = (list: string) => ({ errorMap: () => ({ message: `action must be ${list}` }) });

const PreAnswer = z.discriminatedUnion("action", [z.object({ action: z.literal("allow") }), block, withBody("modify")], actionError('"allow", "block" or "modify"'));
const PostAnswer = z.discriminatedUnion("action", [z.object({ action: z.literal("record") }), block, withBody("redact")], actionError('"record", "block" or "redact"'));

function parse<T>(schema: z.ZodType<T, z.ZodTypeDef, unknown>, phase: HookPhase, hook: string, answer: unknown): T {
  const fail = (what: string) => new HookFailedError(hook, phase, "malformed", `${phase} hook "${hook}" answered something that is not a hook answer: ${what}`);
  if (typeof answer !== "object" || answer === null || Array.isArray(answer)) throw fail("an answer must be a JSON object with an action");
  const r = schema.safeParse(answer);
  if (r.success) return r.data;
  const i = r.error.issues[0]!;
  throw fail(i.code === "invalid_union_discriminator" || i.path.length === 0 ? i.message : `${i.path.join(".")}: ${i.message}`);
}

type Block = { action: "block"; status: number; message: string; hook: string };

function toBlock(hook: string, a: z.output<typeof block>): Block {
  return { action: "block", status: a.status, message: a.message || `blocked by hook "${hook}"`, hook };
}

/** parsePreAnswer turns a pre hook's JSON answer into a PreHookResult, or throws a "malformed" HookFailedError. */
export function parsePreAnswer(hook: string, answer: unknown): PreHookResult {
  const a = parse(PreAnswer, "pre", hook, answer);
  return a.action === "block" ? toBlock(hook, a) : a.action === "modify" ? { action: "modify", body: a.body } : { action: "allow" };
}

/** parsePostAnswer turns a post hook's JSON answer into a PostHookResult, or throws a "malformed" HookFailedError. */
export function parsePostAnswer(hook: string, answer: unknown): PostHookResult {
  const a = parse(PostAnswer, "post", hook, answer);
  return a.action === "block" ? toBlock(hook, a) : a.action === "redact" ? { action: "redact", body: a.body } : { action: "record" };
}
