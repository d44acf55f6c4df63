/**
 * The console's static files: the page's own (src/gateway/console/ui, which
 * the build copies to dist/console) and the UI libraries it runs on,
 * served from the installed packages (preact, htm, uPlot: dependencies of
 * meshguard), never from a CDN. They are read once, on the first request,
 * and kept in memory with a content hash as their ETag (about 150 KiB).
 *
 * The page loads its modules through an import map inline in index.html;
 * the Content-Security-Policy allows that one script by its SHA-256 and
 * every other script only from the gateway itself ('self').
 */
import { createHash } from "node:crypto";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, extname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { ErrorCode, MeshguardError } from "../../errors.js";

export interface Asset {
  body: Buffer;
  type: string;
  etag: string;
}

export interface ConsoleAssets {
  /** Path under /console/ ("" is the page) → file. */
  files: Map<string, Asset>;
  /** The Content-Security-Policy every console answer carries. */
  csp: string;
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
};

/**
 * The UI libraries: served path → [a module Node resolves from here, as it
 * resolves meshguard's dependencies; the file to serve beside it, when not
 * that one]. htm's browser build is not among its package's exports, so it
 * is found next to the file its main export resolves to.
 */
const VENDOR: Record<string, [string, string?]> = {
  "vendor/preact.mjs": ["preact"],
  "vendor/hooks.mjs": ["preact/hooks"],
  "vendor/htm.mjs": ["htm", "htm.module.js"],
  "vendor/uplot.js": ["uplot/dist/uPlot.iife.min.js"],
  "vendor/uplot.css": ["uplot/dist/uPlot.min.css"],
};

/**
 * uiDir finds the page's files: next to this file when running from src/
 * (src/gateway/console/ui), or the build's copy when running from dist/
 * (this module is bundled into some file under dist/, and the copy is
 * dist/console).
 */
function uiDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, "ui"), join(here, "console"), join(here, "..", "console"), join(here, "..", "..", "console")];
  const found = candidates.find((d) => existsSync(join(d, "index.html")));
  if (found) return found;
  throw new MeshguardError(ErrorCode.GATEWAY_CONSOLE_UNAVAILABLE, `the console's files are not installed (looked in ${candidates.join(", ")})`, {
    hint: "reinstall meshguard; from a checkout, `npm run build` copies them to dist/console",
  });
}

function asset(body: Buffer, path: string): Asset {
  const type = TYPES[extname(path)];
  if (type === undefined) throw new Error(`no content type for ${path}`);
  return { body, type, etag: `"${createHash("sha256").update(body).digest("base64url").slice(0, 22)}"` };
}

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : TYPES[extname(n)] ? [p] : [];
  });
}

/** The inline import map of index.html, whose hash the CSP allows. */
const IMPORT_MAP = /<script type="importmap">([\s\S]*?)<\/script>/;

/** loadAssets reads every console file; it throws GATEWAY_CONSOLE_UNAVAILABLE when they are missing. */
export function loadAssets(): ConsoleAssets {
  const dir = uiDir();
  const files = new Map<string, Asset>();
  try {
    for (const p of walk(dir)) files.set(relative(dir, p).split("\\").join("/"), asset(readFileSync(p), p));
    const require = createRequire(import.meta.url);
    for (const [path, [spec, beside]] of Object.entries(VENDOR)) {
      const file = require.resolve(spec);
      files.set(path, asset(readFileSync(beside === undefined ? file : join(dirname(file), beside)), path));
    }
  } catch (err) {
    throw new MeshguardError(ErrorCode.GATEWAY_CONSOLE_UNAVAILABLE, `the console's files cannot be read: ${(err as Error).message}`, {
      cause: err,
      hint: "reinstall meshguard (preact, htm and uplot are its dependencies)",
    });
  }
  const page = files.get("index.html")!;
  files.set("", page);
  const map = IMPORT_MAP.exec(page.body.toString("utf8"))?.[1];
  const mapHash = map === undefined ? "" : ` 'sha256-${createHash("sha256").update(map).digest("base64")}'`;
  const csp = [
    "default-src 'none'",
    `script-src 'self'${mapHash}`,
    "style-src 'self'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join("; ");
  return { files, csp };
}
