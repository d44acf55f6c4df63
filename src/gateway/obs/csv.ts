/**
 * CSV rows for exports, written by csv-stringify (RFC 4180: quoted when a
 * field holds a comma, quote, CR or LF; quotes doubled; CRLF row ends).
 *
 * Exports are opened in spreadsheets, and a cell starting with = + - @ (or
 * a tab or CR) is taken there as a formula: text cells that start so (a
 * model name or a denial reason a client chose) get a leading apostrophe,
 * as OWASP advises. Numbers are written as numbers and never changed.
 */

import { stringify } from "csv-stringify/sync";

export type Cell = string | number | boolean | null | undefined;

const FORMULA_START = /^[=+\-@\t\r]/;

function cell(v: Cell): string {
  if (v === null || v === undefined) return "";
  if (typeof v === "number") return Number.isFinite(v) ? String(v) : "";
  if (typeof v === "boolean") return v ? "true" : "false";
  return FORMULA_START.test(v) ? `'${v}` : v;
}

/** csvRow is one CSV line, CRLF included. */
export function csvRow(cells: readonly Cell[]): string {
  return stringify([cells.map(cell)], { record_delimiter: "windows" });
}
