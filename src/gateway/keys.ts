/**
 * Provider keys: read once at start from where the config says they are
 * (an environment variable or a file). A key that cannot be read stops the
 * start with an error naming the variable or file — never the key. Keys live
 * only in the provider table (./providers.ts) and in the scrubber that
 * removes them from anything leaving the gateway (./scrub.ts).
 */

import { readFile } from "node:fs/promises";
import { z } from "zod";
import { ErrorCode, MeshguardError } from "../errors.js";

const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** KeySourceSchema validates where a secret is: `{ "env": "NAME" }` or `{ "file": "path" }`, never the secret itself. */
export const KeySourceSchema = z
  .object(
    {
    env: z.string().regex(ENV_NAME_RE, 'must be an environment variable name, e.g. "OPENAI_API_KEY"').optional(),
    file: z.string().min(1, "must be a file path").optional(),
    },
    { invalid_type_error: 'must be { "env": "NAME" } or { "file": "path" }: a key is never written in the config itself' },
  )
  .strict()
  .refine((k) => (k.env === undefined) !== (k.file === undefined), {
    message: 'must be { "env": "NAME" } or { "file": "path" } (exactly one): a key is never written in the config itself',
  });

export type KeySource = { env?: string | undefined; file?: string | undefined };

/** readKey returns the key a source names; `what` says whose key it is in the error ("provider openai"). */
export async function readKey(src: KeySource, what: string, env: NodeJS.ProcessEnv = process.env): Promise<string> {
  if (src.env !== undefined) {
    const v = env[src.env];
    if (v === undefined || v.trim() === "") {
      throw new MeshguardError(ErrorCode.GATEWAY_KEY_UNAVAILABLE, `the key of ${what} is read from the environment variable ${src.env}, which is ${v === undefined ? "not set" : "empty"}`, {
        hint: `set ${src.env} in the gateway's environment, or point "key" at a file: { "file": "path" }`,
      });
    }
    return v.trim();
  }
  let text: string;
  try {
    text = await readFile(src.file!, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    throw new MeshguardError(ErrorCode.GATEWAY_KEY_UNAVAILABLE, `the key of ${what} is read from ${src.file}, which cannot be read (${code})`, {
      hint: "check the path (relative paths are relative to the config file) and that the gateway's user may read it",
    });
  }
  const key = text.trim();
  if (key === "") throw new MeshguardError(ErrorCode.GATEWAY_KEY_UNAVAILABLE, `the key file ${src.file} of ${what} is empty`, { hint: "write the provider key into the file" });
  return key;
}
