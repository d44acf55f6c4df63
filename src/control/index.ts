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
} from "./headscale.js";
export { MAGIC_DNS_DOMAIN } from "./config.js";
export { buildGoProgram, GoBuildError, type GoProgram, type GoBuildOptions, type GoBuildResult } from "./gobuild.js";
export type { ProgressEvent, ProgressListener, ProgressPhase } from "../progress.js";
