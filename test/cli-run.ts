// runCliCaptured: `meshguard ARGV` in-process, with the files it may read
// given as a map, and its stdout and stderr captured (the CLI tests share it).
import { PassThrough } from "node:stream";
import { runCli } from "../src/cli/run.js";

export async function runCliCaptured(argv: string[], files: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = new PassThrough();
  const err = new PassThrough();
  let stdout = "";
  let stderr = "";
  out.on("data", (c) => (stdout += c));
  err.on("data", (c) => (stderr += c));
  const code = await runCli(argv, {
    stdout: out,
    stderr: err,
    readText: async (p: string) => {
      if (!(p in files)) throw Object.assign(new Error(`ENOENT ${p}`), { code: "ENOENT" });
      return files[p]!;
    },
  });
  return { code, stdout, stderr };
}
