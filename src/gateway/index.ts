/**
 * meshguard/gateway: the AI gateway on the tailnet. Re-exports only.
 */

export { startGateway, type GatewayHandle, type GatewayOptions } from "./start.js";
export { GatewayConfigError, GatewayConfigSchema, loadGatewayConfig, parseGatewayConfig, type GatewayConfig, type GatewayConfigInput, type ProviderConfig } from "./config.js";
export { GATEWAY_CAP } from "./access.js";
export type * from "./types.js";
