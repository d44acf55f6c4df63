/**
 * CSV rows as RFC 4180 writes them: fields separated by commas, rows ended
 * by CRLF, a field quoted when it holds a comma, a quote, CR or LF, with
 * quotes doubled inside. (No maintained CSV writer is among the project's
 * dependencies yet — csv-stringify is requested — so this is the one
 * function that would call it.)
 *
 * Exports are opened in spreadsheets, and a cell starting with = + - @ (or
 * a tab or CR) is taken there as a formula: text cells that start so (a
 * model name or a denial reason a client chose) get a leading apostrophe,
 * as OWASP advises. Numbers are written as numbers and never changed.
 */

export type Cell = string | number | boolean | null | undefined;

const NEEDS_QUOTES = /[",\r\n]/;
const FORMULA_START = /^[=+\-@\t\r]/;

function cell(v: Cell): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : "";
  if (typeof v === "boolean") return v ? "true" : "false";
  const s = FORMULA_START.test(v) ? `'${v}` : v;
  return NEEDS_QUOTES.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** csvRow is one CSV line, CRLF included. */
export function csvRow(cells: readonly Cell[]): string {
  return `${cells.map(cell).join(",")}\r\n`;
}
