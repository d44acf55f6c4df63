/**
 * The code in the user guides is the code that works. In the documents
 * listed below, every fenced js/ts/mjs block is preceded by one marker
 * (an HTML comment, invisible when rendered):
 *
 *   <!-- file: examples/x/y.mjs -->  the block is that file, verbatim; the
 *                                    file is typechecked here and run by its
 *                                    own test (test/integration/getting-started.test.ts)
 *   <!-- typecheck -->               the block is typechecked against the real
 *                                    exported API ("meshguard", "meshguard/guard", …
 *                                    resolve to src/)
 *
 * and every jsonc block marked `<!-- policy -->` loads with loadPolicy (its
 * tests pass), every one marked `<!-- gateway-config -->` with
 * parseGatewayConfig; `<!-- file: … -->` works for any block. A block without a
 * marker fails the test, so a new snippet cannot go unchecked.
 */

import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

import { COMMANDS } from "../../src/cli/commands.js";
import { parseGatewayConfig } from "../../src/gateway/index.js";
import { loadPolicy } from "../../src/policy/index.js";

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const DOCS = ["docs/getting-started.md", "docs/security-model.md", "docs/database.md", "docs/connectors.md"];
const CODE_LANGS = new Set(["js", "mjs", "ts", "javascript", "typescript"]);

interface Block {
  doc: string;
  line: number;
  lang: string;
  marker: string | undefined;
  code: string;
}

/** The fenced blocks of a markdown text, each with the marker comment on the line before its fence (blank lines between allowed). */
function blocks(doc: string, text: string): Block[] {
  const lines = text.split("\n");
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,})([\w-]*)/.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, lang] = open;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !new RegExp(`^\\s*${fence}\\s*$`).test(lines[j]!); j++) body.push(lines[j]!.slice(indent!.length));
    let k = i - 1;
    while (k >= 0 && lines[k]!.trim() === "") k--;
    const m = k >= 0 ? /^\s*<!--\s*(.+?)\s*-->\s*$/.exec(lines[k]!) : null;
    out.push({ doc, line: i + 1, lang: lang!, marker: m?.[1], code: body.join("\n") + "\n" });
    i = j;
  }
  return out;
}

const all = DOCS.flatMap((d) => blocks(d, readFileSync(ROOT + d, "utf8")));
const where = (b: Block) => `${b.doc}:${b.line}`;

describe("docs examples", () => {
  it("finds the guides' code blocks (not vacuous)", () => {
    expect(all.filter((b) => CODE_LANGS.has(b.lang)).length).toBeGreaterThanOrEqual(5);
    expect(all.some((b) => b.marker?.startsWith("file: "))).toBe(true);
    expect(all.some((b) => b.marker === "policy")).toBe(true);
  });

  it("every js/ts block is marked as a file or as typechecked", () => {
    const unmarked = all.filter((b) => CODE_LANGS.has(b.lang) && !(b.marker === "typecheck" || b.marker?.startsWith("file: ")));
    expect(unmarked.map(where), "add <!-- typecheck --> or <!-- file: examples/… --> before these blocks").toEqual([]);
  });

  it("a block marked as a file is that file, verbatim", () => {
    const wrong: string[] = [];
    for (const b of all.filter((x) => x.marker?.startsWith("file: "))) {
      const file = b.marker!.slice(6).trim();
      if (!existsSync(ROOT + file)) wrong.push(`${where(b)}: ${file} does not exist`);
      else if (readFileSync(ROOT + file, "utf8") !== b.code) wrong.push(`${where(b)}: differs from ${file} (paste the file again)`);
    }
    expect(wrong).toEqual([]);
  });

  it("every policy block loads, and its tests pass", () => {
    const failed: string[] = [];
    for (const b of all.filter((x) => x.marker === "policy")) {
      try {
        loadPolicy(b.code, { file: where(b) });
      } catch (err) {
        failed.push(`${where(b)}: ${(err as Error).message}`);
      }
    }
    expect(failed).toEqual([]);
  });

  it("every meshguard command line the guides show names a command and options it has", () => {
    const lines: { at: string; line: string }[] = [];
    for (const b of all.filter((x) => x.lang === "sh")) for (const l of b.code.split("\n")) lines.push({ at: where(b), line: l });
    for (const d of DOCS) for (const m of readFileSync(ROOT + d, "utf8").matchAll(/`((?:npx )?meshguard [^`]+)`/g)) lines.push({ at: d, line: m[1]! });
    const wrong: string[] = [];
    let checked = 0;
    for (const { at, line } of lines) {
      const words = line.replace(/#.*$/, "").trim().replace(/^npx /, "").split(/\s+/);
      if (words[0] !== "meshguard") continue;
      const cmd = COMMANDS.find((c) => c.name === words.slice(1, 3).join(" ")) ?? COMMANDS.find((c) => c.name === words[1]);
      if (!cmd) {
        wrong.push(`${at}: no command \`meshguard ${words.slice(1, 3).join(" ")}\``);
        continue;
      }
      checked++;
      const end = words.indexOf("--"); // meshguard run ... -- node agent.js: the agent's own arguments follow
      for (const w of words.slice(1, end === -1 ? undefined : end)) {
        const opt = /^--([a-z-]+)/.exec(w)?.[1];
        if (opt && !(opt in cmd.options) && opt !== "json" && opt !== "help") wrong.push(`${at}: meshguard ${cmd.name} has no option --${opt}`);
      }
    }
    expect(checked).toBeGreaterThanOrEqual(5);
    expect(wrong).toEqual([]);
  });

  it("every gateway config block parses", () => {
    const failed: string[] = [];
    const found = all.filter((x) => x.marker === "gateway-config");
    for (const b of found) {
      try {
        parseGatewayConfig(b.code, { file: "/etc/meshguard/gateway.hujson" });
      } catch (err) {
        failed.push(`${where(b)}: ${(err as Error).message}`);
      }
    }
    expect(found.length).toBeGreaterThan(0);
    expect(failed).toEqual([]);
  });

  it("every examples/ path the guides name exists", () => {
    const missing: string[] = [];
    for (const d of DOCS) {
      for (const m of readFileSync(ROOT + d, "utf8").matchAll(/\bexamples\/[\w./-]*\w/g)) if (!existsSync(ROOT + m[0])) missing.push(`${d}: ${m[0]}`);
    }
    expect(missing).toEqual([]);
  });

  it("every js/ts block and every example file they show typechecks against the exported API", () => {
    const dir = ROOT + ".cache/docs-examples/";
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    const files: string[] = [];
    const origin = new Map<string, string>();
    all.forEach((b, i) => {
      if (!CODE_LANGS.has(b.lang)) return;
      if (b.marker === "typecheck") {
        // Each snippet is its own module (top-level await, its own imports).
        const f = `${dir}block-${i}.${b.lang.startsWith("t") ? "mts" : "mjs"}`;
        writeFileSync(f, b.code.includes("import ") || b.code.includes("export ") ? b.code : b.code + "export {};\n");
        files.push(f);
        origin.set(f, where(b));
      } else if (b.marker?.startsWith("file: ")) {
        const f = ROOT + b.marker.slice(6).trim();
        if (!files.includes(f)) files.push(f), origin.set(f, f.slice(ROOT.length));
      }
    });
    const program = ts.createProgram(files, {
      target: ts.ScriptTarget.ES2023,
      lib: ["lib.es2023.d.ts", "lib.esnext.disposable.d.ts", "lib.dom.d.ts"],
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      strict: true,
      noEmit: true,
      allowJs: true,
      checkJs: true,
      skipLibCheck: true,
      esModuleInterop: true,
      resolveJsonModule: true,
      types: ["node"],
      typeRoots: [ROOT + "node_modules/@types"],
      baseUrl: ROOT,
      // The package's own names, resolved to its sources: what a user's import gets, typed.
      paths: { meshguard: ["src/index.ts"], "meshguard/*": ["src/*/index.ts"] },
    });
    const errors = ts
      .getPreEmitDiagnostics(program)
      .filter((d) => d.file && origin.has(d.file.fileName))
      .map((d) => {
        const { line } = d.file!.getLineAndCharacterOfPosition(d.start ?? 0);
        return `${origin.get(d.file!.fileName)} (line ${line + 1} of the block): ${ts.flattenDiagnosticMessageText(d.messageText, "\n")}`;
      });
    expect(errors).toEqual([]);
    // Not vacuous: a wrong call in a snippet is reported.
    const bad = `${dir}bad.mts`;
    writeFileSync(bad, 'import { MeshNode } from "meshguard";\nawait MeshNode.start({ controlUrl: 1 });\n');
    const p2 = ts.createProgram([bad], program.getCompilerOptions());
    expect(ts.getPreEmitDiagnostics(p2).filter((d) => d.file?.fileName === bad).length).toBeGreaterThan(0);
  }, 120_000);
});
