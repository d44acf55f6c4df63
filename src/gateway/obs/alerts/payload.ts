/**
 * What an alert webhook is sent: one alert per POST.
 *
 * - "json": `{ "version": 1, "source": "meshguard-gateway", "gateway", "alert": { rule, kind,
 *   subject, severity, time (ISO 8601), summary, details } }`.
 * - "slack": a Slack incoming-webhook message, `{ text, blocks }`: `text` is
 *   the notification line (and what clients without blocks show), the blocks
 *   a section with the summary and a context line naming the rule, the
 *   subject and the gateway. Text is escaped as Slack asks (&, <, >), so a
 *   model or node name cannot inject a link or a mention.
 */

import type { Alert } from "./types.js";

export const ALERT_WIRE_VERSION = 1;

export function jsonPayload(a: Alert, gateway: string): string {
  return JSON.stringify({
    version: ALERT_WIRE_VERSION,
    source: "meshguard-gateway",
    gateway,
    alert: { rule: a.rule, kind: a.kind, subject: a.subject, severity: a.severity, time: new Date(a.time).toISOString(), summary: a.summary, details: a.details },
  });
}

const ICON: Record<Alert["severity"], string> = { warning: ":warning:", critical: ":rotating_light:" };

export function slackPayload(a: Alert, gateway: string): string {
  const title = `${ICON[a.severity]} meshguard alert *${esc(a.rule)}*: ${esc(a.summary)}`;
  return JSON.stringify({
    text: title,
    blocks: [
      { type: "section", text: { type: "mrkdwn", text: title } },
      {
        type: "context",
        elements: [{ type: "mrkdwn", text: `${esc(a.kind)} · subject \`${esc(a.subject)}\` · gateway ${esc(gateway)} · ${new Date(a.time).toISOString()}` }],
      },
    ],
  });
}

/** esc escapes the three characters Slack's mrkdwn gives meaning to. */
function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
