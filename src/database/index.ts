/**
 * meshguard/database: PostgreSQL roles for tailnet callers, the database
 * gateway and `policy apply --db` (docs/database.md).
 */
export {
  PG_MAX_IDENTIFIER_BYTES,
  MESHGUARD_SCHEMA,
  DEFAULT_GATEWAY_ROLE,
  PRINCIPAL_SETTING,
  OWNERS_SETTING,
  fitIdentifier,
  roleForUser,
  roleForTag,
  roleForTagSet,
  roleForCaller,
  quoteIdent,
  quoteLiteral,
  meshguardSchemaSql,
  ownersSettingValue,
  type DbCaller,
} from "./roles.js";
export {
  applyDatabasePolicy,
  rowsExpressionError,
  type DatabaseApplyOptions,
  type DatabaseApplyResult,
  type DatabaseChange,
  type DatabaseClient,
} from "./apply.js";
export { startDatabaseGateway, type DatabaseGatewayOptions, type DatabaseGatewayHandle } from "./gateway.js";
export { type DatabaseGatewayConfig, type DatabaseGatewayConfigInput } from "./config.js";
export { pinnedSettingChange, STARTUP_SETTINGS, PINNED_SEARCH_PATH } from "./session.js";
