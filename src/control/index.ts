export {
  HEADSCALE_VERSION,
  ensureHeadscale,
  headscaleCacheDir,
  LocalControl,
  type AuthKeyOptions,
  type ControlExit,
  type ControlNode,
  type ControlUser,
  type EnsureHeadscaleOptions,
  type LocalControlOptions,
  type RestartOptions,
} from "./headscale.js";
export { MAGIC_DNS_DOMAIN } from "./config.js";
export { anchorPolicy } from "./anchor.js";
export { buildGoProgram, GoBuildError, type GoProgram, type GoBuildResult } from "./gobuild.js";
