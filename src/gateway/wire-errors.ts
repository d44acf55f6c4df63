/**
 * Errors the gateway itself answers, in the API's own error format, so a
 * client SDK raises its usual error type with a readable message:
 *
 *   openai     {"error": {"message", "type", "code", "param": null}}
 *   anthropic  {"type": "error", "error": {"type", "message"}}
 *   gemini     {"error": {"code", "message", "status"}}
 *
 * and the same shapes as a server-sent event for a stream that breaks after
 * its headers were sent (each SDK throws on it).
 */

import type { ApiFormat } from "./types.js";

/** Why the gateway answers an error; each maps to a status and each format's error type. */
export type GatewayErrorKind =
  | "bad_request" // 400: malformed JSON, no model
  | "not_found" // 404: unknown path or model
  | "denied" // 403: policy
  | "too_large" // 413: body over maxBodyBytes
  | "quota" // 429: bucket exhausted
  | "blocked" // a hook blocked (status from the hook)
  | "unreachable" // 502: connect failed, upstream reset
  | "timeout" // 504: no answer in time
  | "unavailable" // 503: the gateway is closing
  | "internal"; // 500

const STATUS: Record<GatewayErrorKind, number> = {
  bad_request: 400,
  not_found: 404,
  denied: 403,
  too_large: 413,
  quota: 429,
  blocked: 400,
  unreachable: 502,
  timeout: 504,
  unavailable: 503,
  internal: 500,
};

export function statusOf(kind: GatewayErrorKind): number {
  return STATUS[kind];
}

const OPENAI_TYPE: Record<GatewayErrorKind, [type: string, code: string]> = {
  bad_request: ["invalid_request_error", "invalid_request"],
  not_found: ["invalid_request_error", "model_not_found"],
  denied: ["permission_error", "policy_denied"],
  too_large: ["invalid_request_error", "request_too_large"],
  quota: ["insufficient_quota", "quota_exceeded"],
  blocked: ["invalid_request_error", "blocked_by_hook"],
  unreachable: ["api_error", "upstream_unreachable"],
  timeout: ["api_error", "upstream_timeout"],
  unavailable: ["api_error", "gateway_unavailable"],
  internal: ["api_error", "internal_error"],
};

const ANTHROPIC_TYPE: Record<GatewayErrorKind, string> = {
  bad_request: "invalid_request_error",
  not_found: "not_found_error",
  denied: "permission_error",
  too_large: "request_too_large",
  quota: "rate_limit_error",
  blocked: "invalid_request_error",
  unreachable: "api_error",
  timeout: "timeout_error",
  unavailable: "overloaded_error",
  internal: "api_error",
};

const GEMINI_STATUS: Record<GatewayErrorKind, string> = {
  bad_request: "INVALID_ARGUMENT",
  not_found: "NOT_FOUND",
  denied: "PERMISSION_DENIED",
  too_large: "INVALID_ARGUMENT",
  quota: "RESOURCE_EXHAUSTED",
  blocked: "INVALID_ARGUMENT",
  unreachable: "UNAVAILABLE",
  timeout: "DEADLINE_EXCEEDED",
  unavailable: "UNAVAILABLE",
  internal: "INTERNAL",
};

/** errorBody is the JSON text of an error in `format`. */
export function errorBody(format: ApiFormat, kind: GatewayErrorKind, message: string, status = STATUS[kind]): string {
  switch (format) {
    case "anthropic":
      return JSON.stringify({ type: "error", error: { type: ANTHROPIC_TYPE[kind], message } });
    case "gemini":
      return JSON.stringify({ error: { code: status, message, status: GEMINI_STATUS[kind] } });
    default: {
      const [type, code] = OPENAI_TYPE[kind];
      return JSON.stringify({ error: { message, type, code, param: null } });
    }
  }
}

/** errorEvent is the error as one server-sent event, for a stream already under way. */
export function errorEvent(format: ApiFormat, kind: GatewayErrorKind, message: string): string {
  const body = errorBody(format, kind, message);
  return format === "anthropic" ? `event: error\ndata: ${body}\n\n` : `data: ${body}\n\n`;
}
