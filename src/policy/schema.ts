/**
 * The policy file format, versions 1 to 4, as zod schemas (version 2 adds
 * `dns` and `udp` rules, version 3 the AI gateway's `gateway` section,
 * version 4 `token` rules; docs/policy.md, "Format history"). This is the single
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

export const HttpMatchSchema = strictObject({
  scheme: z.array(z.enum(["http", "https"])).min(1).optional().describe("default: both"),
  host: z.array(HostPatternSchema).min(1, 'list at least one host pattern (or "*")'),
  port: z.array(PortSchema).min(1).optional().describe("default: any port"),
  method: z
    .array(z.string().regex(/^([A-Za-z]+|\*)$/, 'must be an HTTP method such as "GET", or "*"'))
    .min(1)
    .optional()
    .describe("default: any method"),
  path: globList("path")
    .optional()
    .describe('globs: "*" is one path segment, "**" any number of segments, ":name" a named segment; default: any path'),
  query: z
    .record(z.string().min(1), z.string())
    .optional()
    .describe("each named query parameter must be present and its value match the glob; others are free"),
});

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
    .describe('names looked up: "*", "api.example.com", "*.example.com" (subdomains, not the apex); a reverse look-up asks for "4.3.2.1.in-addr.arpa"'),
  rrtype: z
    .array(z.enum(RRTYPES, { errorMap: () => ({ message: `must be one of ${RRTYPES.map((t) => `"${t}"`).join(", ")}` }) }))
    .min(1)
    .optional()
    .describe("record types asked for; default: any. An address look-up (dns.lookup) asks for A and AAAA: list both to allow it"),
  server: z
    .array(z.string().min(1, "must not be empty"))
    .min(1)
    .optional()
    .describe('DNS servers the query may go to: "system" (the system\'s resolver), "*", or an address or CIDR range with an optional port ("192.0.2.53", "127.0.0.1:5353", "[2001:db8::53]:5353"; no port: 53); default: ["system"]'),
});

export const UdpMatchSchema = strictObject({
  host: z.array(HostPatternSchema).min(1, 'list at least one host pattern (or "*")'),
  port: z.array(PortSchema).min(1, 'list at least one port (or "*")'),
});

export const TcpMatchSchema = strictObject({
  host: z.array(HostPatternSchema).min(1, 'list at least one host pattern (or "*")'),
  port: z.array(PortSchema).min(1, 'list at least one port (or "*")'),
  tls: z.boolean().optional().describe("true: TLS only, false: plain TCP only; default: either"),
  tailnet: z.boolean().optional().describe("true: tailnet dials only (MeshNode.dial), false: host network only; default: either"),
});

const ScalarSchema = z.union([z.string(), z.number(), z.boolean(), z.null()]);
export const ArgConstraintSchema = z.union([
  z.string().describe("glob the (string) argument must match"),
  strictObject({
    glob: z.string().optional(),
    in: z.array(ScalarSchema).min(1).optional(),
    min: z.number().optional(),
    max: z.number().optional(),
    maxLength: z.number().int().nonnegative().optional(),
  }),
]);

export const McpMatchSchema = strictObject({
  server: globList("server"),
  tool: globList("tool"),
  args: z
    .record(z.string().min(1), ArgConstraintSchema)
    .optional()
    .describe("each named argument must be present and satisfy its constraint; others are free"),
});

export const LlmMatchSchema = strictObject({
  model: globList("model").describe('globs over "provider/model", e.g. "openai/gpt-4o*", "anthropic/*"'),
  maxTokens: z.number().int().positive().optional().describe("the request must declare max tokens ≤ this; unknown fails closed"),
});

/** One entry of a token rule's actions: methods on locations, or a scope string (src/policy/token-actions.ts). */
export const TokenActionSchema = z.union([
  strictObject({
    methods: z
      .array(z.string().regex(/^(?:[A-Z][A-Z0-9_-]*|\*)$/, 'must be an upper-case HTTP method such as "GET", or "*"'))
      .min(1, 'list at least one method (or "*")'),
    locations: z
      .array(z.string().min(1, "a location must not be empty"))
      .min(1, "list at least one location")
      .describe('scheme://host[:port]/path-glob: "*" within one path segment, "**" across segments, e.g. "https://billing/v2/transactions/*"'),
  }),
  z.string().min(1).describe('a scope string: "http:GET:billing/v2/transactions/*" (methods comma-separated or "*"; no scheme means http and https)'),
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
    .describe('service origins ("http://billing") or names; "*" in a pattern matches any characters'),
  actions: z.array(TokenActionSchema).min(1, "list at least one action").describe("what a token may grant: { methods, locations } or scope strings"),
  maxTtl: z
    .string()
    .refine((s) => parseDuration(s) !== undefined, DURATION_HINT)
    .optional()
    .describe('the longest lifetime of a token this rule grants, e.g. "15m"; default: the issuer\'s cap'),
});

export const WEEKDAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"] as const;
const WeekdaySchema = z.enum(WEEKDAYS, {
  errorMap: () => ({ message: `must be one of ${WEEKDAYS.map((d) => `"${d}"`).join(", ")}` }),
});

const HoursSchema = z
  .string()
  .regex(HOURS_RE, 'must be "HH:MM-HH:MM" in 24-hour time, e.g. "09:00-17:00" (the end may be "24:00"; "22:00-06:00" wraps past midnight)');

export const WhenSchema = strictObject({
  hours: z.union([HoursSchema, z.array(HoursSchema).min(1)]).optional(),
  weekdays: z.array(WeekdaySchema).min(1).optional(),
  timeZone: z.string().min(1).optional().describe('an IANA time zone such as "Europe/Berlin"; default "UTC"'),
  headers: z
    .record(z.string().regex(HEADER_NAME_RE, "must be an HTTP header name"), z.string())
    .optional()
    .describe("each header must be present and its value match the glob (HTTP only)"),
  maxBodyBytes: z.number().int().nonnegative().optional().describe("HTTP only; a body of unknown size fails closed"),
  rate: strictObject({ perMinute: z.number().int().positive() }).optional().describe("calls per minute per agent, a token bucket"),
});

export const EffectSchema = z.enum(["allow", "deny", "approve"], {
  errorMap: () => ({ message: 'must be "allow", "deny" or "approve"' }),
});

export const RuleSchema = strictObject({
  id: z.string().regex(RULE_ID_RE, "must start with a letter or digit and use only letters, digits and _ . : / -").optional(),
  description: z.string().optional(),
  src: z.array(SrcSchema).min(1, 'list at least one identity (or "*")'),
  effect: EffectSchema.default("allow"),
  http: HttpMatchSchema.optional(),
  tcp: TcpMatchSchema.optional(),
  mcp: McpMatchSchema.optional(),
  llm: LlmMatchSchema.optional(),
  dns: DnsMatchSchema.optional().describe("a DNS look-up (format version 2)"),
  udp: UdpMatchSchema.optional().describe("a UDP datagram (format version 2)"),
  token: TokenMatchSchema.optional().describe("what the token issuer may grant (format version 4)"),
  when: WhenSchema.optional(),
});

export const TestCaseSchema = strictObject({
  as: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).describe('who calls: "tag:x", "alice@example.com", "node:name", or a list of these'),
  request: z
    .string()
    .min(1)
    .describe('"GET https://host/path", "tcp host:port", "tls host:port", "mcp server tool {json}", "llm provider/model [maxTokens]", "dns name [RRTYPE] [@server]", "udp host:port", "token AUDIENCE METHOD LOCATION"'),
  expect: EffectSchema,
  ruleId: z.string().optional().describe("the id of the rule expected to decide"),
  rule: z.string().optional().describe("deprecated spelling of ruleId (still read)"),
  at: z.string().datetime({ offset: true, message: 'must be an ISO 8601 time such as "2026-03-09T14:00:00Z"' }).optional(),
  headers: z.record(z.string(), z.string()).optional(),
  bodySize: z.number().int().nonnegative().optional(),
  peerTags: z.array(z.string().regex(TAG_RE, "must look like tag:name")).optional(),
});

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
  src: z.array(SrcSchema).min(1, 'list at least one identity (or "*")'),
  role: z
    .enum(["user", "admin"], { errorMap: () => ({ message: 'must be "user" or "admin"' }) })
    .default("user")
    .describe('"admin" reads every log and bucket and refills buckets; default "user"'),
  quotas: z
    .union([BucketNameSchema, z.array(BucketNameSchema)])
    .optional()
    .describe('bucket names from the gateway config\'s "quotas", each the head of a chain; every chain must cover a request'),
});

export const GatewaySectionSchema = strictObject({
  roles: z.array(GatewayRoleSchema).describe("who has which gateway role and quota buckets; additive, admin wins"),
});

/** The meshguard part of a policy: under the key `meshguard`, or the whole file. */
export const MeshguardPartSchema = strictObject({
  $schema: z.string().optional(),
  version: z
    .nativeEnum(
      { V1: 1, V2: 2, V3: 3, V4: 4 } as const,
      { errorMap: () => ({ message: "must be 1, 2, 3 or 4 (the policy format versions this meshguard reads; 2 adds dns and udp rules, 3 the gateway section, 4 token rules)" }) },
    )
    .describe("the file format version: 1, 2 for dns and udp rules, 3 for the gateway section, 4 for token rules"),
  groups: GroupsSchema.optional().describe("groups local to meshguard; merged with the tailnet policy's groups"),
  tagOwners: TagOwnersSchema.optional(),
  rules: z.array(RuleSchema),
  tests: z.array(TestCaseSchema).optional(),
  gateway: GatewaySectionSchema.optional().describe("the AI gateway's roles and quota buckets (format version 3)"),
});

/**
 * A tailnet policy file with meshguard's part under `meshguard`. The tailnet
 * keys are the control server's business: only `groups` and `tagOwners` are
 * read (and shape-checked) here; everything else passes through untouched.
 */
export const CombinedPolicySchema = z
  .object({
    groups: GroupsSchema.optional(),
    tagOwners: TagOwnersSchema.optional(),
    meshguard: MeshguardPartSchema,
  })
  .passthrough();

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
export type When = z.output<typeof WhenSchema>;
export type ArgConstraint = z.output<typeof ArgConstraintSchema>;
export type TestCase = z.output<typeof TestCaseSchema>;
export type MeshguardPart = z.output<typeof MeshguardPartSchema>;
export type GatewaySection = z.output<typeof GatewaySectionSchema>;
export type GatewayRoleGrant = z.output<typeof GatewayRoleSchema>;
/** The policy format versions this meshguard reads (2 adds dns and udp rules, 3 the gateway section, 4 token rules). */
export type PolicyVersion = MeshguardPart["version"];
export type Weekday = (typeof WEEKDAYS)[number];

/** The key under which meshguard's part sits in a combined tailnet policy file. */
export const MESHGUARD_KEY = "meshguard";
