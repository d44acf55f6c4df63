/**
 * The policy file's JSON Schema, generated from the zod schema: one
 * definition for docs/policy.schema.json (test/policy/schema.test.ts) and
 * docs/policy-reference.md (test/meta/policy-reference.test.ts), so the two
 * files cannot describe different formats.
 */

import { zodToJsonSchema } from "zod-to-json-schema";

import { PolicyFileSchema } from "../../src/policy/schema.js";

/** The JSON Schema document of a policy file, as committed in docs/policy.schema.json. */
export function policyJsonSchema(): Record<string, unknown> {
  const schema = zodToJsonSchema(PolicyFileSchema, { name: "MeshguardPolicy", $refStrategy: "none", errorMessages: false });
  return { ...schema, title: "meshguard policy file (format versions 1 to 4)", description: "A meshguard policy: standalone, or under the key \"meshguard\" of a tailnet policy file. See docs/policy.md." };
}

/** The text of docs/policy.schema.json. */
export function policyJsonSchemaText(): string {
  return JSON.stringify(policyJsonSchema(), null, 2) + "\n";
}
