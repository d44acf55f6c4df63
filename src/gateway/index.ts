/**
 * meshguard/gateway: the AI gateway on the tailnet. Re-exports only.
 */

export { startGateway, type GatewayHandle, type GatewayOptions } from "./start.js";
export { GatewayConfigError, GatewayConfigSchema, loadGatewayConfig, parseGatewayConfig, type GatewayConfig, type GatewayConfigInput, type ProviderConfig } from "./config.js";
export { GATEWAY_CAP } from "./access.js";
export type * from "./types.js";
export { alertAuditSink, createAlertEngine, type Alert, type AlertEngine, type AlertEngineOptions, type BucketLevel, type Denial, type TelemetryOptions } from "./obs/index.js";
export type { AlertsConfig, AlertsConfigInput, AlertRule, AlertWebhook, LogConfig, TelemetryConfig } from "./obs/config.js";

// sql rules judge statements with PostgreSQL's parser, a wasm module loaded
// asynchronously (src/policy/sql.ts): importing this entry waits for it, so
// loadPolicy and the guard can parse synchronously from the first call. The
// one exception to "re-exports only"; never in a module the preload loads.
import { sqlParserReady } from "../policy/sql.js";
await sqlParserReady();
