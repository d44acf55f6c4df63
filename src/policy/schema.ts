/**
 * The policy file format, versions 1 to 6, as zod schemas (version 2 adds
 * `dns` and `udp` rules, version 3 the AI gateway's `gateway` section,
 * version 4 `token` rules, version 5 `sql` rules, version 6 `mcp` rules
 * about resources and prompts; docs/policy.md, "Format history"). This is the single
 * source of truth: the loader validates with it, the compiler reads its
 * output types, and `docs/policy.schema.json` (editor completion) is
 * generated from it (test/policy/schema.test.ts checks that file is current).
 *
 * Shape checks live here; checks that relate several fields (one target kind
 * per rule, groups that exist, unique ids) live in ./semantics.ts so that a
 * single failure does not hide the others.
 */

import { z } from "zod";
import { DURATION_HINT, parseDuration } from "./duration.js";

/** strictObject rejects unknown keys and names the valid ones in the message. */
function strictObject<T extends z.ZodRawShape>(shape: T) {
  return z.object(shape).strict(`valid keys here are: ${Object.keys(shape).join(", ")}`);
}

export const TAG_RE = /^tag:[A-Za-z0-9][A-Za-z0-9_-]*$/;
export const GROUP_RE = /^group:[A-Za-z0-9][A-Za-z0-9_.-]*$/;
/** A user is `name@domain` or `name@` (a control server's user without a domain). */
export const USER_RE = /^[A-Za-z0-9._%+-]+@([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?$/;
/** A node name: a DNS name (MagicDNS short name or FQDN). */
export const NODE_RE = /^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;
const HOURS_RE = /^([01]\d|2[0-3]):[0-5]\d-(([01]\d|2[0-3]):[0-5]\d|24:00)$/;
const RULE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:/-]*$/;
const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

/** A who-pattern: `*`, a tag, a group, a user or a node name. */
export const SrcSchema = z
  .string()
  .refine(
    (s) => s === "*" || TAG_RE.test(s) || GROUP_RE.test(s) || USER_RE.test(s) || NODE_RE.test(s),
    'must be "*", a tag ("tag:research-agent"), a group ("group:eng"), a user ("alice@example.com" or "alice@") or a node name ("research-agent")',
  );

/**
 * A host pattern: `*`, an exact name, `*.example.com` (any subdomain, not the
 * apex), an IP address or CIDR range (matched against an IP-literal host and
 * the address the host resolved to), or `tag:x` (a tailnet peer with that tag).
 */
export const HostPatternSchema = z
  .string()
  .min(1, "must not be empty")
  .refine(
    (s) => s === s.toLowerCase() || TAG_RE.test(s) || s.includes(":"),
    "host names are matched lower-case: write the pattern in lower case",
  )
  .describe('"*", "api.example.com", "*.example.com", "10.0.0.0/8", "fd7a:115c:a1e0::/48" or "tag:db"');

/** A port or an inclusive range "8000-8100"; "*" is any port. */
export const PortSchema = z.union([
  z.number().int().min(1, "ports are 1-65535").max(65535, "ports are 1-65535"),
  z.string().regex(/^(\*|\d{1,5}(-\d{1,5})?)$/, 'must be a port number, a range like "8000-8100", or "*"'),
]);

const globList = (what: string) => z.array(z.string().min(1, `a ${what} pattern must not be empty`)).min(1, `list at least one ${what} pattern (or "*")`);

const HOST_PATTERNS_DESC =
  'Host patterns: "*", an exact name ("api.example.com"), "*.example.com" (any subdomain, not the apex), an IP address or CIDR range ("10.0.0.0/8"; matched against an IP-literal host and the address a name resolved to), "tag:db" (a tailnet peer with that tag) or a bare tailnet name.';
const PORTS_DESC = 'Ports: a number, an inclusive range "8000-8100", or "*" (any).';

export const HttpMatchSchema = strictObject({
  scheme: z.array(z.enum(["http", "https"])).min(1).optional().describe("URL schemes the call may use. Default: both"),
  host: z.array(HostPatternSchema).min(1, 'list at least one host pattern (or "*")').describe(HOST_PATTERNS_DESC),
  port: z.array(PortSchema).min(1).optional().describe(`${PORTS_DESC} Default: any port`),
  method: z
    .array(z.string().regex(/^([A-Za-z]+|\*)$/, 'must be an HTTP method such as "GET", or "*"'))
    .min(1)
    .optional()
    .describe('HTTP methods ("GET", "POST", …; "*" is any). Default: any method'),
  path: globList("path")
    .optional()
    .describe('Path globs: "*" is one path segment, "**" any number of segments, ":name" a named segment. Default: any path'),
  query: z
    .record(z.string().min(1), z.string())
    .optional()
    .describe("Each named query parameter must be present and every one of its values match the glob; other parameters are free."),
}).describe("An HTTP(S) request: fetch, node:http/https, undici, WebSocket, SDK calls. Matched on the URL as sent, never on the Host header.");

/** The record types a look-up can ask for (Node's `resolve*` methods; PTR is also `reverse` and `lookupService`). */
export const RRTYPES = ["A", "AAAA", "ANY", "CAA", "CNAME", "MX", "NAPTR", "NS", "PTR", "SOA", "SRV", "TLSA", "TXT"] as const;
export type RrType = (typeof RRTYPES)[number];

export const DnsMatchSchema = strictObject({
  name: z
    .array(
      z
        .string()
        .min(1, "must not be empty")
        .refine((s) => s === s.toLowerCase(), "names are matched lower-case: write the pattern in lower case"),
    )
    .min(1, 'list at least one name pattern (or "*")')
    .describe('Names looked up: "*", "api.example.com", "*.example.com" (subdomains, not the apex); never an address. A reverse look-up asks for "4.3.2.1.in-addr.arpa".'),
  rrtype: z
    .array(z.enum(RRTYPES, { errorMap: () => ({ message: `must be one of ${RRTYPES.map((t) => `"${t}"`).join(", ")}` }) }))
    .min(1)
    .optional()
    .describe("Record types asked for. An address look-up (dns.lookup) asks for A and AAAA: list both to allow it. Default: any type"),
  server: z
    .array(z.string().min(1, "must not be empty"))
    .min(1)
    .optional()
    .describe('DNS servers the query may go to: "system" (the system\'s resolver), "*", or an address or CIDR range with an optional port ("192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:5353"; no port: 53). Default: ["system"]'),
}).describe("A DNS look-up the agent makes itself (node:dns). The look-up a connection makes for its own host is part of that connection's decision, not a dns target.");

export const UdpMatchSchema = strictObject({
  host: z.array(HostPatternSchema).min(1, 'list at least one host pattern (or "*")').describe(HOST_PATTERNS_DESC),
  port: z.array(PortSchema).min(1, 'list at least one port (or "*")').describe(PORTS_DESC),
}).describe("A UDP datagram (node:dgram): every send, connected socket or not.");

export const TcpMatchSchema = strictObject({
  host: z.array(HostPatternSchema).min(1, 'list at least one host pattern (or "*")').describe(HOST_PATTERNS_DESC),
  port: z.array(PortSchema).min(1, 'list at least one port (or "*")').describe(PORTS_DESC),
  tls: z.boolean().optional().describe("true: TLS only; false: plain TCP only. Default: either"),
  tailnet: z.boolean().optional().describe("true: tailnet dials only (MeshNode.dial); false: host network only. Default: either"),
}).describe("A raw TCP or TLS connection (net, tls, database drivers) or a tailnet dial (MeshNode.dial).");

const ScalarSchema = z.union([z.string(), z.number(), z.boolean(), z.null()]);
export const ArgConstraintSchema = z.union([
  z.string().describe("glob the (string) argument must match"),
  strictObject({
    glob: z.string().optional().describe("The argument must be a string matching this glob."),
    in: z.array(ScalarSchema).min(1).optional().describe("The argument must be one of these values (strings, numbers, booleans, null)."),
    min: z.number().optional().describe("The argument must be a number ≥ this."),
    max: z.number().optional().describe("The argument must be a number ≤ this."),
    maxLength: z.number().int().nonnegative().optional().describe("The argument (a string or a list) must be at most this long."),
  }).describe("Constraints on one MCP tool argument: every one given must hold, and the argument must be present."),
]);

export const McpMatchSchema = strictObject({
  server: globList("server").describe("Globs over the MCP server's name, as the application names it to the guard (never the name the server gives itself), or as the gateway config names it."),
  tool: globList("tool").optional().describe('Globs over the tool name ("get_*"). A rule names exactly one of tool, resource (format version 6) and prompt (format version 6).'),
  resource: globList("resource")
    .optional()
    .describe('Globs over the URI of a resource read (resources/read), e.g. "file:///docs/**" ("*" also matches "/") (format version 6).'),
  prompt: globList("prompt").optional().describe('Globs over the name of a prompt asked for (prompts/get) (format version 6).'),
  args: z
    .record(z.string().min(1), ArgConstraintSchema)
    .optional()
    .describe("Each named argument (of the tool, or of the prompt) must be present and satisfy its constraint; other arguments are free."),
}).describe("An MCP tools/call (tool), resources/read (resource) or prompts/get (prompt), judged at the AI gateway's MCP endpoint. In the guard: a tools/call through any transport of the official MCP SDK, and all three when sent to a registered gateway's MCP endpoint (docs/connectors.md).");

export const LlmMatchSchema = strictObject({
  model: globList("model").describe('Globs over "provider/model", e.g. "openai/gpt-4o*", "anthropic/*".'),
  maxTokens: z.number().int().positive().optional().describe("The request must declare max tokens ≤ this; a request that declares none fails closed."),
}).describe("An LLM call (provider and model, read from the request body), in the guard and at the AI gateway. The endpoint must also be allowed as an http call.");

/** One entry of a token rule's actions: methods on locations, or a scope string (src/policy/token-actions.ts). */
export const TokenActionSchema = z.union([
  strictObject({
    methods: z
      .array(z.string().regex(/^(?:[A-Z][A-Z0-9_-]*|\*)$/, 'must be an upper-case HTTP method such as "GET", or "*"'))
      .min(1, 'list at least one method (or "*")')
      .describe('Upper-case HTTP methods, or "*" for any.'),
    locations: z
      .array(z.string().min(1, "a location must not be empty"))
      .min(1, "list at least one location")
      .describe('scheme://host[:port]/path-glob: "*" within one path segment, "**" across segments, e.g. "https://billing/v2/transactions/*".'),
  }).describe("Methods on locations a token may grant."),
  z.string().min(1).describe('A scope string: "http:GET:billing/v2/transactions/*" (methods comma-separated or "*"; no scheme means http and https).'),
]);

/**
 * A token rule (format version 4): which audiences and actions the token
 * issuer may grant to `src`. A requested action is granted when it is
 * contained in one of the rule's actions (docs/tokens.md, "Containment").
 */
export const TokenMatchSchema = strictObject({
  audience: z
    .array(z.string().min(1, "an audience must not be empty"))
    .min(1, 'list at least one audience (or "*")')
    .describe('Service origins ("http://billing") or names; "*" in a pattern matches any characters.'),
  actions: z.array(TokenActionSchema).min(1, "list at least one action").describe("What a token may grant: { methods, locations } objects or scope strings. A requested action is granted when one entry contains it."),
  maxTtl: z
    .string()
    .refine((s) => parseDuration(s) !== undefined, DURATION_HINT)
    .optional()
    .describe('The longest lifetime of a token this rule grants, e.g. "15m". Default: the issuer\'s cap'),
}).describe("What the token issuer may grant to src: audiences and actions of a session-scoped token (docs/tokens.md).");

export const SQL_OPERATION_NAMES = ["select", "insert", "update", "delete", "merge", "copy_to", "copy_from", "ddl", "call", "do", "prepare", "execute", "cursor", "explain", "set", "*"] as const;

/**
 * A database statement rule (format version 5): which operations `src` may
 * make on which objects of which databases (docs/policy.md, "Database
 * statements").
 */
export const SqlMatchSchema = strictObject({
  database: globList("database").describe('Globs over the database name the connection is to ("appdb", "app_*", "*").'),
  table: globList("table").describe(
    'Globs over the schema-qualified object: a table or view ("public.orders", "public.*"; a view by its own name), a function for call ("public.refresh_stats", "pg_catalog.set_config"), a setting for set ("statement_timeout"). Dangerous built-ins (set_config, pg_read_file, lo_*, dblink*, …) match only a pattern naming them without a wildcard. Operations without an object (do, prepare, execute, cursor) match whatever the patterns are.',
  ),
  operation: z
    .array(z.enum(SQL_OPERATION_NAMES, { errorMap: () => ({ message: `must be one of ${SQL_OPERATION_NAMES.map((o) => `"${o}"`).join(", ")}` }) }))
    .min(1, 'list at least one operation (or "*")')
    .describe('Operations: select, insert, update, delete, merge, copy_to, copy_from, ddl (CREATE, ALTER, DROP, TRUNCATE, …), call (functions and procedures), do, prepare, execute, cursor, explain, set; "*" is any.'),
  columns: z
    .array(z.string().min(1, "a column name must not be empty"))
    .min(1)
    .optional()
    .describe('The columns the statement may name (read or written); a statement naming another column, or all of them ("SELECT *", an INSERT without a column list), does not match. Default: any column'),
  rows: z
    .string()
    .min(1, "a row filter must not be empty")
    .optional()
    .describe('A row filter: a SQL boolean expression ("z IS NOT NULL", "owner = ANY (meshguard.owners())") applied to reads (USING) and writes (WITH CHECK) by the database gateway. The in-process guard cannot filter its own session: there, a statement only a rule with rows would allow is denied.'),
}).describe("A database statement: its operations on tables, views, functions and settings, found by PostgreSQL's own parser.");

export const WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;
const WeekdaySchema = z.enum(WEEKDAYS, {
  errorMap: () => ({ message: `must be one of ${WEEKDAYS.map((d) => `"${d}"`).join(", ")}` }),
});

const HoursSchema = z
  .string()
  .regex(HOURS_RE, 'must be "HH:MM-HH:MM" in 24-hour time, e.g. "09:00-17:00" (the end may be "24:00"; "22:00-06:00" wraps past midnight)');

export const WhenSchema = strictObject({
  hours: z
    .union([HoursSchema, z.array(HoursSchema).min(1)])
    .optional()
    .describe('Time windows "HH:MM-HH:MM" in timeZone: start included, end excluded; "24:00" ends at midnight; "22:00-06:00" wraps past midnight. Default: any time'),
  weekdays: z.array(WeekdaySchema).min(1).optional().describe("Days of the week, of the local date in timeZone at the instant of the call. Default: every day"),
  timeZone: z.string().min(1).optional().describe('The IANA time zone of hours and weekdays, such as "Europe/Berlin". Default: "UTC"'),
  headers: z
    .record(z.string().regex(HEADER_NAME_RE, "must be an HTTP header name"), z.string())
    .optional()
    .describe("Each header must be present and its value match the glob (HTTP only)."),
  maxBodyBytes: z.number().int().nonnegative().optional().describe("The request body must be at most this many bytes (HTTP allow and approve rules); a body of unknown size fails closed."),
  rate: strictObject({ perMinute: z.number().int().positive().describe("At most this many calls at once, refilled continuously at this many per minute.") })
    .optional()
    .describe("Calls per minute per agent (allow and approve rules): a token bucket per rule and agent."),
}).describe("Conditions that must all hold for the rule to match.");

export const EffectSchema = z.enum(["allow", "deny", "approve"], {
  errorMap: () => ({ message: 'must be "allow", "deny" or "approve"' }),
});

const SRC_DESC = 'Who: "*", a tag ("tag:research-agent"), a group ("group:eng"), a user ("alice@example.com", or "alice@" for a user without a domain) or a node name ("research-agent"). A tagged node is known by its tags.';

export const RuleSchema = strictObject({
  id: z
    .string()
    .regex(RULE_ID_RE, "must start with a letter or digit and use only letters, digits and _ . : / -")
    .optional()
    .describe("The rule's name in decisions, audit events and tests; unique in the file. Default: rules[N], its position"),
  description: z.string().optional().describe("Free text, shown in decision reasons."),
  src: z.array(SrcSchema).min(1, 'list at least one identity (or "*")').describe(SRC_DESC),
  effect: EffectSchema.default("allow").describe('What a match means: "deny" wins over "approve" (a human decides), which wins over "allow".'),
  http: HttpMatchSchema.optional(),
  tcp: TcpMatchSchema.optional(),
  mcp: McpMatchSchema.optional(),
  llm: LlmMatchSchema.optional(),
  dns: DnsMatchSchema.optional().describe("A DNS look-up the agent makes itself (node:dns) (format version 2)."),
  udp: UdpMatchSchema.optional().describe("A UDP datagram (node:dgram) (format version 2)."),
  token: TokenMatchSchema.optional().describe("What the token issuer may grant to src (format version 4)."),
  sql: SqlMatchSchema.optional().describe("A database statement (format version 5)."),
  when: WhenSchema.optional(),
}).describe("One rule: src (who), exactly one target kind (http, tcp, udp, dns, mcp, llm, token or sql: what), optional conditions (when) and an effect.");

export const TestCaseSchema = strictObject({
  as: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).describe('Who calls: "tag:x", "alice@example.com", "node:name", or a list of these.'),
  request: z
    .string()
    .min(1)
    .describe('The call, as one line: "GET https://host/path", "tcp host:port", "tls host:port", "mcp server tool {json}", "mcp-resource server URI", "mcp-prompt server name {json}", "llm provider/model [maxTokens]", "dns name [RRTYPE] [@server]", "udp host:port", "token AUDIENCE METHOD LOCATION", "sql DATABASE STATEMENT".'),
  expect: EffectSchema.describe("The decision the policy must make."),
  ruleId: z.string().optional().describe("The id of the rule expected to decide."),
  rule: z.string().optional().describe("Deprecated spelling of ruleId (still read)."),
  at: z
    .string()
    .datetime({ offset: true, message: 'must be an ISO 8601 time such as "2026-03-09T14:00:00Z"' })
    .optional()
    .describe("The time of the call, for hours and weekdays conditions. Default: the time the tests run"),
  headers: z.record(z.string(), z.string()).optional().describe("Request headers, for when.headers conditions."),
  bodySize: z.number().int().nonnegative().optional().describe("The body size in bytes, for when.maxBodyBytes. Default: unknown (fails a maxBodyBytes condition closed)"),
  peerTags: z.array(z.string().regex(TAG_RE, "must look like tag:name")).optional().describe("The tags of the tailnet peer called, for tag:x host patterns."),
  rowFilters: z.boolean().optional().describe("For a sql request: true judges it as the database gateway does (rows filters enforced, so rules with rows allow); default false, as the in-process guard does."),
}).describe("One test case: a policy whose tests fail is rejected whole.");

const GroupsSchema = z.record(
  z.string().regex(GROUP_RE, 'must look like "group:name"'),
  z.array(z.string().regex(USER_RE, 'group members are users: "alice@example.com" or "alice@"')),
);
const TagOwnersSchema = z.record(z.string().regex(TAG_RE, 'must look like "tag:name"'), z.array(z.string()));

/** A quota bucket name, as the gateway config's `quotas` defines them (no "/" or ":"). */
const BucketNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]*$/, 'a bucket name uses letters, digits and _ . - (as defined in the gateway config\'s "quotas")');

/**
 * One grant of the AI gateway's roles (format version 3): callers matching
 * `src` get `role` and are charged to the buckets in `quotas` (each the head
 * of a chain that follows the buckets' `overdraft`). Grants add up; admin wins.
 */
export const GatewayRoleSchema = strictObject({
  src: z.array(SrcSchema).min(1, 'list at least one identity (or "*")').describe(SRC_DESC),
  role: z
    .enum(["user", "admin"], { errorMap: () => ({ message: 'must be "user" or "admin"' }) })
    .default("user")
    .describe('"admin" reads every log and bucket and refills buckets; "user" reads their own.'),
  quotas: z
    .union([BucketNameSchema, z.array(BucketNameSchema)])
    .optional()
    .describe('Bucket names from the gateway config\'s "quotas", each the head of a chain; every chain must cover a request.'),
}).describe("One grant of gateway roles and quota buckets: callers matching src get role and are charged to quotas.");

export const GatewaySectionSchema = strictObject({
  roles: z.array(GatewayRoleSchema).describe("Who has which gateway role and quota buckets; grants add up, admin wins."),
}).describe("The AI gateway's roles and quota buckets (docs/policy.md, Gateway access).");

/** The meshguard part of a policy: under the key `meshguard`, or the whole file. */
export const MeshguardPartSchema = strictObject({
  $schema: z.string().optional().describe('The JSON Schema for editor completion, e.g. "./policy.schema.json"; ignored by meshguard.'),
  version: z
    .nativeEnum(
      { V1: 1, V2: 2, V3: 3, V4: 4, V5: 5, V6: 6 } as const,
      { errorMap: () => ({ message: "must be 1, 2, 3, 4, 5 or 6 (the policy format versions this meshguard reads; 2 adds dns and udp rules, 3 the gateway section, 4 token rules, 5 sql rules, 6 mcp resource and prompt rules)" }) },
    )
    .describe("The file format version: 1; 2 adds dns and udp rules, 3 the gateway section, 4 token rules, 5 sql rules, 6 mcp resource and prompt rules. Every version stays readable."),
  groups: GroupsSchema.optional().describe('Groups of users ("group:eng": ["alice@example.com"]) local to meshguard; merged with the tailnet policy\'s groups (a name defined in both is an error).'),
  tagOwners: TagOwnersSchema.optional().describe("Who owns each tag (users or groups), as in a tailnet policy file: the humans accountable for a tagged node (whois owners)."),
  rules: z.array(RuleSchema).describe("The rules. Deny by default: a call no rule allows is denied."),
  tests: z.array(TestCaseSchema).optional().describe("Test cases that must pass before the policy is accepted."),
  gateway: GatewaySectionSchema.optional().describe("The AI gateway's roles and quota buckets (format version 3)."),
}).describe("meshguard's egress policy: the whole file, or the value of the key \"meshguard\" in a tailnet policy file.");

/**
 * A tailnet policy file with meshguard's part under `meshguard`. The tailnet
 * keys are the control server's business: only `groups` and `tagOwners` are
 * read (and shape-checked) here; everything else passes through untouched.
 */
export const CombinedPolicySchema = z
  .object({
    groups: GroupsSchema.optional().describe("The tailnet's groups; meshguard rules may name them too."),
    tagOwners: TagOwnersSchema.optional().describe("The tailnet's tag owners; read for whois owners."),
    meshguard: MeshguardPartSchema,
  })
  .passthrough()
  .describe("A tailnet policy file (headscale or Tailscale) with meshguard's part under the key \"meshguard\". meshguard reads groups and tagOwners; every other key (grants, acls, hosts, …) is the control server's, passed through untouched and pushed by meshguard policy apply.");

/** The whole file: either shape. */
export const PolicyFileSchema = z.union([CombinedPolicySchema, MeshguardPartSchema]);

export type Rule = z.output<typeof RuleSchema>;
export type RuleInput = z.input<typeof RuleSchema>;
export type HttpMatch = z.output<typeof HttpMatchSchema>;
export type TcpMatch = z.output<typeof TcpMatchSchema>;
export type McpMatch = z.output<typeof McpMatchSchema>;
export type LlmMatch = z.output<typeof LlmMatchSchema>;
export type DnsMatch = z.output<typeof DnsMatchSchema>;
export type UdpMatch = z.output<typeof UdpMatchSchema>;
export type TokenMatch = z.output<typeof TokenMatchSchema>;
export type SqlMatch = z.output<typeof SqlMatchSchema>;
export type When = z.output<typeof WhenSchema>;
export type ArgConstraint = z.output<typeof ArgConstraintSchema>;
export type TestCase = z.output<typeof TestCaseSchema>;
export type MeshguardPart = z.output<typeof MeshguardPartSchema>;
export type GatewaySection = z.output<typeof GatewaySectionSchema>;
export type GatewayRoleGrant = z.output<typeof GatewayRoleSchema>;
/** The policy format versions this meshguard reads (2 adds dns and udp rules, 3 the gateway section, 4 token rules, 5 sql rules, 6 mcp resource and prompt rules). */
export type PolicyVersion = MeshguardPart["version"];
export type Weekday = (typeof WEEKDAYS)[number];

/** The key under which meshguard's part sits in a combined tailnet policy file. */
export const MESHGUARD_KEY = "meshguard";
