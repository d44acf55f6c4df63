// docs/errors.md lists every error code, and no code that does not exist.
import { readFileSync } from "node:fs";
import { expect, test } from "vitest";
import { ErrorCode } from "../../src/errors.js";

test("docs/errors.md documents exactly the ErrorCode values", () => {
  const text = readFileSync(new URL("../../docs/errors.md", import.meta.url), "utf8");
  const documented = [...text.matchAll(/^\| `(MESHGUARD_[A-Z_]+)` \|/gm)].map((m) => m[1]).sort();
  expect(documented).toEqual(Object.values(ErrorCode).sort());
});
