// What every SDK example needs, in one place: a local tailnet (headscale on
// 127.0.0.1), a service node serving one HTTP handler on port 80 (the
// simulated LLM provider, or an MCP server), and a guarded agent node.
// Then `attempt` runs one call and prints plainly whether it was ALLOWED or
// BLOCKED; `finish` prints a RESULT line (JSON, what the test reads) and
// sets the exit code when a call did not do what the example says.
//
// Everything stays on 127.0.0.1: an IP-literal control URL, no log upload,
// no port mapping (meshguard sets those knobs); `npm run examples:sdk` also
// runs the examples inside a loopback-only network namespace.
import { mkdtempSync, rmSync } from "node:fs";
import http from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { LocalControl } from "meshguard/control";
import { MeshNode } from "meshguard";
import { installGuard, PolicyDeniedError } from "meshguard/guard";
import { loadPolicy, tailnetPart } from "meshguard/policy";

const t0 = performance.now();
/** step prints progress with the time since start. */
export const step = (msg) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)}s] ${msg}`);

/**
 * startExample brings up the tailnet and returns what an example uses.
 *
 *   policy   one policy file: the tailnet part (tagOwners, grants) goes to
 *            headscale, the `meshguard` part to the agent's guard
 *   service  { hostname, tag, handler(req, res) }: served on port 80
 *   agent    { hostname, tag }
 *   guard    more installGuard options (llm providers, MCP server names)
 *   onService called with the service's MeshNode (for whois) before it serves
 */
export async function startExample({ name, policy, service, agent, guard: guardOptions = {}, onService }) {
  const dir = mkdtempSync(join(tmpdir(), `meshguard-example-${name}-`));
  const closers = [() => rmSync(dir, { recursive: true, force: true })];
  const close = async () => {
    for (const c of closers.reverse()) await Promise.resolve().then(c).catch(() => {});
    closers.length = 0;
  };
  try {
    step("starting a local tailnet (headscale on 127.0.0.1; the first run builds it)");
    const control = await LocalControl.start({ policy: tailnetPart(JSON.stringify(policy)) });
    closers.push(() => control.close());
    await control.createUser("alice");
    const start = async ({ hostname, tag }) => {
      const node = await MeshNode.start({
        controlUrl: control.url,
        hostname,
        authKey: await control.createAuthKey({ tags: [tag], ephemeral: true }),
        dir: join(dir, hostname),
        ephemeral: true,
      });
      closers.push(() => node.close());
      return node;
    };
    const [svc, agentNode] = await Promise.all([start(service), start(agent)]);
    onService?.(svc);
    await svc.listen(80, http.createServer(service.handler));
    step(`${service.hostname} (${service.tag}) serves on http://${service.hostname}/ ; ${agent.hostname} (${agent.tag}) is the agent`);

    // The guard: every outbound call of this process is judged as the agent node (its tags come from whois).
    const guard = installGuard({ policy: loadPolicy(JSON.stringify(policy)), identity: agentNode, ...guardOptions });
    closers.push(() => guard.close());
    await guard.ready;
    const decisions = [];
    guard.on("decision", (d) => {
      decisions.push(d);
      console.log(`         guard: ${d.outcome} ${d.request} (${d.ruleId ? `rule ${d.ruleId}` : "no rule: deny by default"})`);
    });
    step(`guard on for ${agent.hostname}: tags ${guard.principal.tags.join(",")}; SDKs instrumented: ${[...new Set(guard.instrumented.filter((s) => s.includes(" (")).map((s) => s.split(" ")[0]))].join(", ")}`);

    const results = {};
    return {
      agent: agentNode,
      guard,
      /** fetch: the agent's calls go over the tailnet (MeshNode.fetch); pass it as an SDK's `fetch` option. */
      fetch: (url, init) => agentNode.fetch(url, init),
      /**
       * attempt runs one call the example expects to be `allowed` or
       * `blocked`, and prints which it was. `seen()` counts what the
       * service received that this call would have caused.
       */
      async attempt(expect, what, call, seen) {
        const before = seen();
        const nDecisions = decisions.length;
        const started = performance.now();
        let value;
        let error;
        try {
          value = await call();
        } catch (err) {
          error = err;
        }
        const ms = Math.round(performance.now() - started);
        const reachedServer = seen() > before;
        const mine = decisions.slice(nDecisions);
        const denies = mine.filter((d) => d.outcome === "deny").length;
        if (error === undefined) {
          console.log(`ALLOWED  ${what}\n         -> ${value} (${ms} ms; the service ${reachedServer ? "received it" : "DID NOT receive it"})`);
        } else if (error instanceof PolicyDeniedError) {
          console.log(`BLOCKED  ${what}\n         -> ${error.name} ${error.code} after ${ms} ms (${denies} decision${denies === 1 ? "" : "s"}, no retry): ${error.reason}`);
          console.log(`         the service ${reachedServer ? "RECEIVED IT (a bug)" : "never received it"}`);
        } else {
          console.log(`FAILED   ${what}\n         -> ${error?.name ?? "error"}: ${error?.message ?? error} after ${ms} ms`);
        }
        results[expect] = {
          what,
          ok: error === undefined,
          ...(error !== undefined ? { error: error?.name ?? String(error), code: error?.code, policyDenied: error instanceof PolicyDeniedError, message: String(error?.message ?? error).split("\n")[0] } : {}),
          ms,
          denies,
          reachedServer,
        };
        return value;
      },
      /** finish prints the RESULT line, closes everything and sets the exit code. */
      async finish() {
        const a = results.allowed;
        const b = results.blocked;
        const ok = a?.ok === true && a.reachedServer === true && b?.policyDenied === true && b.reachedServer === false && b.denies === 1;
        console.log(`RESULT ${JSON.stringify({ example: name, ok, allowed: a, blocked: b })}`);
        await close();
        if (!ok) process.exitCode = 1;
      },
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
