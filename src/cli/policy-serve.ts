/**
 * `meshguard policy serve FILE --key KEY ...`: a policy server on the
 * tailnet. Joins the tailnet as its own node, signs FILE with the Ed25519
 * key, serves it at http://HOSTNAME:PORT/v1/policy (long poll, ETags), and
 * re-signs it whenever FILE changes — a FILE that does not load is not
 * signed, the last good policy stays served. Agents follow it with
 * `pollPolicyServer` and trust the public key printed here.
 *
 * `meshguard policy serve --keygen KEY` writes a new key pair (KEY, KEY.pub).
 */

import { readFile, writeFile } from "node:fs/promises";
import { parseCommand } from "./args.js";

import { isMeshguardError } from "../errors.js";
import { MeshNode } from "../node.js";
import { generateBundleKeys, keyId } from "../distribution/index.js";
import { POLICY_PATH, servePolicy } from "../distribution/index.js";
import type { PolicyIO, PolicySubcommand } from "./policy.js";

const USAGE = `usage: meshguard policy serve FILE --key KEY --control URL [--auth-key K] [--hostname policy] [--port 8080] [--json]
       meshguard policy serve --keygen KEY

Serves FILE, signed with the Ed25519 private key KEY, to the tailnet at
http://HOSTNAME:PORT${POLICY_PATH}, and re-signs it on every change.

  --key KEY        the private key (PEM); agents trust KEY.pub
  --keygen KEY     write a new key pair to KEY (private, mode 0600) and KEY.pub, then exit
  --control URL    the control server (or TS_CONTROL_URL)
  --auth-key K     the node's auth key (or TS_AUTHKEY)
  --hostname NAME  the node's name (default "policy")
  --port PORT      the tailnet port (default 8080)
  --dir DIR        the node's state directory (default: ephemeral)
  --json           print one JSON object when serving (progress stays on stderr)
`;

async function policyServeCommand(argv: string[], io: PolicyIO = {}): Promise<number> {
  const stdout = io.stdout ?? process.stdout;
  const stderr = io.stderr ?? process.stderr;
  const say = (m: string) => void stderr.write(`meshguard policy serve: ${m}\n`);
  const parsed = parseCommand<Record<string, string | boolean | undefined>>(
    "policy serve",
    argv,
    {
      key: { type: "string" },
      keygen: { type: "string" },
      control: { type: "string" },
      "auth-key": { type: "string" },
      hostname: { type: "string" },
      port: { type: "string" },
      dir: { type: "string" },
    },
    USAGE,
    { stdout, stderr },
  );
  if (typeof parsed === "number") return parsed;
  const { values, positionals } = parsed;

  if (typeof values.keygen === "string") {
    const k = generateBundleKeys();
    try {
      await writeFile(values.keygen, k.privateKey, { mode: 0o600, flag: "wx" });
      await writeFile(`${values.keygen}.pub`, k.publicKey);
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      say(`cannot write ${e.path ?? values.keygen}: ${e.code === "EEXIST" ? "it exists (not overwritten)" : e.message}`);
      return 1;
    }
    const id = keyId(k.publicKey);
    stdout.write(values.json ? JSON.stringify({ privateKey: values.keygen, publicKey: `${values.keygen}.pub`, keyId: id }) + "\n" : `wrote ${values.keygen} (private) and ${values.keygen}.pub (key id ${id})\n`);
    return 0;
  }

  const [file] = positionals;
  const controlUrl = (values.control as string | undefined) ?? process.env.TS_CONTROL_URL;
  const port = Number(values.port ?? 8080);
  if (positionals.length !== 1 || file === undefined || typeof values.key !== "string" || !controlUrl) {
    stderr.write(`meshguard policy serve: expected FILE, --key KEY and --control URL\n\n${USAGE}`);
    return 2;
  }
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    stderr.write(`meshguard policy serve: --port must be 1-65535\n`);
    return 2;
  }
  let privateKey: string;
  try {
    privateKey = await readFile(values.key, "utf8");
  } catch (err) {
    stderr.write(`meshguard policy serve: cannot read the key ${values.key}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}\n`);
    return 2;
  }

  let node: MeshNode | undefined;
  let served: Awaited<ReturnType<typeof servePolicy>> | undefined;
  const stop = new Promise<string>((resolve) => {
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("SIGTERM", () => resolve("SIGTERM"));
  });
  try {
    const hostname = (values.hostname as string | undefined) ?? "policy";
    const authKey = values["auth-key"] as string | undefined;
    node = await MeshNode.start({
      controlUrl,
      hostname,
      ...(authKey ? { authKey } : {}),
      ...(values.dir ? { dir: values.dir as string } : { ephemeral: true }),
      onProgress: (p) => say(p.message),
    });
    served = await servePolicy(node, port, {
      privateKey,
      file,
      log: say,
      whois: async (req) => {
        const w = await node!.whois(req.socket);
        return `${w.node.hostname} (${w.tagged ? w.node.tags.join(",") : w.user.login})`;
      },
    });
    if (served.policy.bundle === undefined) say(`warning: ${file} did not load; nothing is served until it does`);
    const url = `http://${hostname}:${port}${POLICY_PATH}`;
    const id = keyId(privateKey);
    stdout.write(values.json ? JSON.stringify({ url, name: node.name, ips: node.ips, keyId: id, version: served.policy.bundle?.version ?? null }) + "\n" : `serving ${file} at ${url} (node ${node.name}, key id ${id}); Ctrl-C to stop\n`);
    say(`stopping (${await stop})`);
    return 0;
  } catch (err) {
    if (!isMeshguardError(err)) throw err;
    say(err.message);
    return 1;
  } finally {
    await served?.close();
    await node?.close();
  }
}

export const policyServe: PolicySubcommand = { summary: "serve a signed policy to agents on the tailnet", run: policyServeCommand };
