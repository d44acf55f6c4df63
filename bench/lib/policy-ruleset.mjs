// One synthetic rule set, written for every engine bench/policy compares:
// meshguard's HuJSON, Cedar policies, a Rego module, OpenFGA tuples and Ory
// Oathkeeper access rules, plus the requests that hit rules deep in the set.
//
// The mix: many agents (one tag per N/4) and hosts (N/2 services, every tenth
// rule a wildcard zone), GET/POST on a path prefix per rule, a deny rule
// every twentieth (admin paths), and a time window on every fifth rule (always
// open, so that its cost is paid and the decision stays "allow").

/** ruleSet describes rule i of n in engine-neutral terms. */
export function ruleSet(n) {
  const agents = Math.max(4, Math.floor(n / 4));
  const hosts = Math.max(4, Math.floor(n / 2));
  const rules = [];
  for (let i = 0; i < n; i++) {
    if (i % 20 === 19) {
      rules.push({ i, effect: 'deny', agent: undefined, host: `svc-${i % hosts}.corp.example`, wildcard: false, methods: undefined, prefix: '/admin', window: false });
      continue;
    }
    const wildcard = i % 10 === 3;
    rules.push({
      i,
      effect: 'allow',
      agent: `agent-${i % agents}`,
      host: wildcard ? `zone-${i}.example` : `svc-${i % hosts}.corp.example`,
      wildcard,
      methods: i % 2 ? ['GET'] : ['GET', 'POST'],
      prefix: `/v2/r${i}`,
      window: i % 5 === 0,
    });
  }
  return rules;
}

/** deepRequests are allow-hits on rules in the last tenth of the set (the index must find them, not a scan). */
export function deepRequests(rules, count = 1000) {
  const allow = rules.filter((r) => r.effect === 'allow' && r.i >= Math.floor(rules.length * 0.9));
  const pool = allow.length ? allow : rules.filter((r) => r.effect === 'allow');
  const out = [];
  for (let k = 0; k < count; k++) {
    const r = pool[k % pool.length];
    out.push({ rule: r, agent: r.agent, method: 'GET', host: r.wildcard ? `api.${r.host}` : r.host, path: `${r.prefix}/items/${k}`, hour: 12 });
  }
  return out;
}

export function meshguardPolicy(rules) {
  return JSON.stringify({
    version: 1,
    rules: rules.map((r) =>
      r.effect === 'deny'
        ? { id: `r${r.i}`, effect: 'deny', src: ['*'], http: { host: [r.host], path: [`${r.prefix}/**`] } }
        : {
            id: `r${r.i}`,
            src: [`tag:${r.agent}`],
            http: { host: [r.wildcard ? `*.${r.host}` : r.host], method: r.methods, path: [`${r.prefix}/**`] },
            ...(r.window ? { when: { hours: '00:00-24:00' } } : {}),
          },
    ),
  });
}

export function meshguardRequest(q) {
  return {
    principal: { tags: [`tag:${q.agent}`] },
    target: { kind: 'http', scheme: 'https', host: q.host, port: 443, method: q.method, path: q.path, query: '', headers: {} },
  };
}

export function cedarPolicies(rules) {
  return rules
    .map((r) => {
      if (r.effect === 'deny') return `@id("r${r.i}") forbid (principal, action, resource) when { context.host == "${r.host}" && context.path like "${r.prefix}/*" };`;
      const host = r.wildcard ? `context.host like "*.${r.host}"` : `context.host == "${r.host}"`;
      const window = r.window ? ' && context.hour >= 0 && context.hour < 24' : '';
      const actions = r.methods.map((m) => `Action::"${m}"`).join(', ');
      return `@id("r${r.i}") permit (principal == Agent::"tag:${r.agent}", action in [${actions}], resource) when { ${host} && context.path like "${r.prefix}/*"${window} };`;
    })
    .join('\n');
}

export function cedarRequest(q) {
  return {
    principal: { type: 'Agent', id: `tag:${q.agent}` },
    action: { type: 'Action', id: q.method },
    resource: { type: 'Endpoint', id: 'any' },
    context: { host: q.host, path: q.path, hour: q.hour },
    entities: [],
  };
}

export function regoModule(rules) {
  const lines = ['package meshguard', '', 'default allow := false', 'default deny := false', 'default permit := false', '', 'allow if {', '\tnot deny', '\tpermit', '}', ''];
  for (const r of rules) {
    if (r.effect === 'deny') {
      lines.push(`deny if {\n\tinput.host == "${r.host}"\n\tglob.match("${r.prefix}/**", ["/"], input.path)\n}`);
      continue;
    }
    const host = r.wildcard ? `glob.match("*.${r.host}", ["."], input.host)` : `input.host == "${r.host}"`;
    const methods = r.methods.length === 1 ? `input.method == "${r.methods[0]}"` : `input.method in {${r.methods.map((m) => `"${m}"`).join(', ')}}`;
    const window = r.window ? '\n\tinput.hour >= 0\n\tinput.hour < 24' : '';
    lines.push(`permit if {\n\tinput.principal == "tag:${r.agent}"\n\t${methods}\n\t${host}\n\tglob.match("${r.prefix}/**", ["/"], input.path)${window}\n}`);
  }
  return lines.join('\n') + '\n';
}

export function regoInput(q) {
  return { principal: `tag:${q.agent}`, method: q.method, host: q.host, path: q.path, hour: q.hour };
}

/** OpenFGA has no globs: one endpoint object per rule (method|host|path prefix), the caller maps a request to it. */
export const FGA_MODEL = {
  schema_version: '1.1',
  type_definitions: [
    { type: 'agent' },
    { type: 'endpoint', relations: { can_call: { this: {} } }, metadata: { relations: { can_call: { directly_related_user_types: [{ type: 'agent' }] } } } },
  ],
};

export function fgaTuples(rules) {
  const out = [];
  for (const r of rules) {
    if (r.effect !== 'allow') continue;
    for (const m of r.methods) out.push({ user: `agent:${r.agent}`, relation: 'can_call', object: `endpoint:${m}|${r.wildcard ? `*.${r.host}` : r.host}|${r.prefix}` });
  }
  return out;
}

export function fgaCheck(q) {
  const r = q.rule;
  return { tuple_key: { user: `agent:${q.agent}`, relation: 'can_call', object: `endpoint:${q.method}|${r.wildcard ? `*.${r.host}` : r.host}|${r.prefix}` } };
}

/** Oathkeeper matches URLs and methods only (its rules carry no caller identity). */
export function oathkeeperRules(rules) {
  return rules.map((r) => ({
    id: `r${r.i}`,
    match: { url: `<{http,https}>://${r.wildcard ? `<*>.${r.host}` : r.host}${r.prefix}/<**>`, methods: r.methods ?? ['GET', 'POST', 'PUT', 'DELETE'] },
    authenticators: [{ handler: 'anonymous' }],
    authorizer: { handler: r.effect === 'deny' ? 'deny' : 'allow' },
    mutators: [{ handler: 'noop' }],
  }));
}
