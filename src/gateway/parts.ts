/**
 * The config sections owned by the gateway's other parts (quotas, hooks,
 * store, observability): each part exports its own zod schema, and the gateway config
 * takes them from here, so a section is validated by the part that reads it.
 */

import { ConsoleConfigSchema } from "./console/config.js";
import { HooksConfigSchema } from "./hooks.js";
import { AlertsConfigSchema, LogConfigSchema, TelemetryConfigSchema } from "./obs/config.js";
import { QuotasConfigSchema } from "./quotas/config.js";
import { RetentionConfigSchema, StorageConfigSchema } from "./store/config.js";

export const GATEWAY_PARTS = {
  quotas: QuotasConfigSchema,
  hooks: HooksConfigSchema,
  retention: RetentionConfigSchema,
  storage: StorageConfigSchema,
  telemetry: TelemetryConfigSchema,
  log: LogConfigSchema,
  alerts: AlertsConfigSchema,
  console: ConsoleConfigSchema,
};
