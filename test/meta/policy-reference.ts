/**
 * Renders docs/policy-reference.md from the policy file's JSON Schema
 * (itself generated from the zod schema in src/policy/schema.ts): every
 * field, its type, whether it is required, its default, the format version
 * that added it, and its description. test/meta/policy-reference.test.ts
 * checks the committed file against this.
 *
 * Two conventions in the zod descriptions carry what JSON Schema has no
 * keyword for: a trailing "Default: …." sentence (for defaults that zod
 * cannot express without changing what the parser returns: an absent
 * `scheme` means both schemes, and stays absent) and "(format version N)" on
 * a field added after version 1 (its sub-fields inherit it).
 */

type Schema = {
  type?: string | string[];
  title?: string;
  description?: string;
  properties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
  propertyNames?: { pattern?: string };
  items?: Schema;
  anyOf?: Schema[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  pattern?: string;
  format?: string;
  minLength?: number;
  minItems?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number | boolean;
  definitions?: Record<string, Schema>;
  $ref?: string;
};

interface Row {
  field: string;
  type: string;
  required: boolean;
  default: string;
  since: number;
  description: string;
}

interface Section {
  anchor: string;
  title: string;
  intro: string;
  rows: Row[];
  extra?: string;
}

const SINCE_RE = /\s*\(format version (\d+)\)/;
const DEFAULT_RE = /(?:^|\s)Default: ([^]*?)\.?$/;

/** Splits a description into its text, the format version it names, and a trailing "Default: …" sentence. */
export function parseDescription(desc: string | undefined): { text: string; since?: number; default?: string } {
  let text = desc ?? "";
  let since: number | undefined;
  const s = SINCE_RE.exec(text);
  if (s) {
    since = Number(s[1]);
    text = text.replace(SINCE_RE, "");
  }
  let dflt: string | undefined;
  const d = DEFAULT_RE.exec(text);
  if (d) {
    dflt = d[1]!.trim();
    text = text.slice(0, d.index).trim();
  }
  return { text: text.trim(), ...(since !== undefined ? { since } : {}), ...(dflt !== undefined ? { default: dflt } : {}) };
}

const cell = (s: string) => s.replace(/\|/g, "\\|").replace(/\n/g, " ");
/** A code span; one holding a backtick is fenced with two (CommonMark). */
const code = (s: string) => (s.includes("`") ? "`` " + s + " ``" : "`" + s + "`");
const anchorOf = (path: string) => "ref-" + (path.replace(/\[\]/g, "").replace(/[^A-Za-z0-9]+/g, "-").replace(/^-|-$/g, "") || "root");

class Renderer {
  readonly sections: Section[] = [];
  /** Fields without a description: the test reports them. */
  readonly undocumented: string[] = [];

  /** The markdown type of `s`, registering a section for every object with named fields. */
  typeOf(s: Schema, path: string, since: number): string {
    if (s.anyOf) return s.anyOf.map((v) => this.typeOf(v, path, since)).join(" or ");
    if (s.enum) return "one of " + s.enum.map((v) => code(JSON.stringify(v))).join(", ");
    if (s.const !== undefined) return code(JSON.stringify(s.const));
    const t = Array.isArray(s.type) ? s.type.join(" or ") : s.type;
    switch (t) {
      case "string": {
        const parts = ["string"];
        if (s.format === "date-time") parts.push("(ISO 8601 date-time with offset)");
        if (s.minLength) parts.unshift("non-empty");
        if (s.pattern) parts.push(`matching ${code(s.pattern)}`);
        return parts.join(" ");
      }
      case "integer":
      case "number": {
        let r = t;
        const lo = typeof s.exclusiveMinimum === "number" ? `> ${s.exclusiveMinimum}` : s.minimum !== undefined ? `≥ ${s.minimum}` : "";
        if (lo && s.maximum !== undefined && s.minimum !== undefined) r += ` ${s.minimum}–${s.maximum}`;
        else {
          if (lo) r += ` ${lo}`;
          if (s.maximum !== undefined) r += ` ≤ ${s.maximum}`;
        }
        return r;
      }
      case "boolean":
        return "boolean";
      case "null":
        return "null";
      case "array": {
        const inner = this.typeOf(s.items ?? {}, path + "[]", since);
        return `list${s.minItems ? ` (at least ${s.minItems})` : ""} of ${inner}`;
      }
      case "object": {
        if (s.properties) {
          this.section(s, path, since);
          return `object: [${code(path)}](#${anchorOf(path)})`;
        }
        const key = s.propertyNames?.pattern ? `key matching ${code(s.propertyNames.pattern)}` : "name";
        const value = typeof s.additionalProperties === "object" ? this.typeOf(s.additionalProperties, path + ".*", since) : "any value";
        return `map of ${key} → ${value}`;
      }
      default:
        return "any";
    }
  }

  /** Renders an object with named fields as a section (sections come out in document order, parents first). */
  section(s: Schema, path: string, since: number, title = code(path), intro?: string): void {
    const anchor = anchorOf(path);
    if (this.sections.some((x) => x.anchor === anchor)) throw new Error(`policy reference: two objects at ${path}`);
    const sec: Section = { anchor, title, intro: intro ?? parseDescription(s.description).text, rows: [] };
    this.sections.push(sec);
    const required = new Set(s.required ?? []);
    for (const [name, field] of Object.entries(s.properties ?? {})) {
      const d = parseDescription(field.description);
      const fieldSince = d.since ?? since;
      const fieldPath = path ? `${path}.${name}` : name;
      if (!d.text) this.undocumented.push(fieldPath);
      const dflt = field.default !== undefined ? code(JSON.stringify(field.default)) : d.default ?? "";
      sec.rows.push({
        field: code(name),
        type: this.typeOf(field, fieldPath, fieldSince),
        // A field with a default may be left out: zod fills it in.
        required: required.has(name) && field.default === undefined,
        default: dflt,
        since: fieldSince,
        description: d.text,
      });
    }
    if (s.additionalProperties === true) sec.extra = "Any other key is allowed here and passed through untouched.";
  }
}

function table(rows: Row[]): string {
  const head = "| field | type | required | default | since | description |\n|---|---|---|---|---|---|\n";
  return head + rows.map((r) => `| ${r.field} | ${cell(r.type)} | ${r.required ? "yes" : "no"} | ${cell(r.default) || "—"} | ${r.since} | ${cell(r.description)} |`).join("\n") + "\n";
}

/** The rendered reference, and the fields that have no description. */
export function renderPolicyReference(doc: Schema): { text: string; undocumented: string[] } {
  const root = doc.$ref ? doc.definitions?.[doc.$ref.replace("#/definitions/", "")] : doc;
  const [combined, part] = root?.anyOf ?? [];
  if (!combined?.properties?.meshguard || !part?.properties?.rules) throw new Error("policy reference: expected anyOf [tailnet policy file, meshguard part] at the schema's root");
  if (JSON.stringify(combined.properties.meshguard) !== JSON.stringify(part)) throw new Error("policy reference: the `meshguard` key and the standalone file differ in the schema");

  const r = new Renderer();
  r.section(part, "", 1, "The meshguard part", parseDescription(part.description).text);
  // The tailnet file: meshguard reads only groups and tagOwners of it, and links to the part above.
  const tailnet: Schema = { ...combined, properties: { ...combined.properties, meshguard: { type: "object", description: combined.properties.meshguard.description ?? "" } } };
  const sec = new Renderer();
  sec.section(tailnet, "(tailnet)", 1, "A tailnet policy file with a `meshguard` key", parseDescription(combined.description).text);
  const t = sec.sections[0]!;
  t.rows = t.rows.map((row) => (row.field === "`meshguard`" ? { ...row, type: "object: [the meshguard part](#ref-root)" } : row));
  const undocumented = [...r.undocumented, ...sec.undocumented];

  const out: string[] = [];
  out.push(`<!-- Generated from docs/policy.schema.json (src/policy/schema.ts) by test/meta/policy-reference.ts. Do not edit: change the zod schema's descriptions, then run
     MESHGUARD_UPDATE_SCHEMA=1 MESHGUARD_UPDATE_DOCS=1 vitest run --config test/vitest.config.ts test/policy/schema.test.ts test/meta/policy-reference.test.ts -->`);
  out.push("");
  out.push("# Policy file reference");
  out.push("");
  out.push(`${doc.title ?? "The policy file"}: every field, generated from the JSON Schema [policy.schema.json](policy.schema.json), itself generated from the zod schema the loader validates with (\`src/policy/schema.ts\`). What the fields mean together — how a decision is made, globs, host patterns, tests, the format history — is [policy.md](policy.md).`);
  out.push("");
  out.push("A file is HuJSON (JSON with comments and trailing commas) in one of two shapes: the meshguard part alone (`{ \"version\": 4, \"rules\": [...] }`), or a tailnet policy file that holds it under the key `meshguard`. *since* is the format version (the part's `version`) that added a field; a file must declare at least that version to use it. *required*: the field must be present whenever the object that holds it is. Unknown keys are errors, except at the top of a tailnet policy file.");
  out.push("");
  out.push("| section | |\n|---|---|");
  for (const s of [...r.sections, t]) out.push(`| [${s.title}](#${s.anchor}) | ${cell(s.intro.split(/(?<=\.)\s/)[0] ?? "")} |`);
  out.push("");
  for (const s of [...r.sections, t]) {
    out.push(`<a id="${s.anchor}"></a>`);
    out.push("");
    out.push(`## ${s.title}`);
    out.push("");
    if (s.intro) out.push(s.intro, "");
    out.push(table(s.rows));
    if (s.extra) out.push(s.extra, "");
  }
  return { text: out.join("\n").replace(/\n+$/, "\n"), undocumented };
}
