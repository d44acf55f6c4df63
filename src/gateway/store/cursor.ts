/**
 * The paging cursor of queryLogs: the position (time, then insertion order)
 * of the last record of a page. Opaque to clients; a cursor that does not
 * decode is an INVALID_OPTIONS error (the logs API answers 400), never a
 * silent first page.
 */
import { ErrorCode, MeshguardError } from "../../errors.js";

export interface Position {
  time: number;
  seq: number;
}

export function encodeCursor(p: Position): string {
  return Buffer.from(`${p.time}.${p.seq}`).toString("base64url");
}

export function decodeCursor(cursor: string): Position {
  const m = /^(\d{1,16})\.(\d{1,16})$/.exec(Buffer.from(cursor, "base64url").toString("latin1"));
  if (!m) throw new MeshguardError(ErrorCode.INVALID_OPTIONS, `invalid log cursor ${JSON.stringify(cursor.slice(0, 40))}`, { hint: "pass the `next` value of the previous page unchanged" });
  return { time: Number(m[1]), seq: Number(m[2]) };
}
