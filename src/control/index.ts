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
// For a headscale server this process did not start (the one `meshguard dev`
// runs): what `meshguard policy apply` pushes a policy with.
export { setHeadscalePolicy, type HeadscaleServer } from "./policy.js";
export { MAGIC_DNS_DOMAIN } from "./config.js";
export { anchorPolicy } from "./anchor.js";
export { buildGoProgram, GoBuildError, type GoProgram, type GoBuildOptions, type GoBuildResult } from "./gobuild.js";
export type { ProgressEvent, ProgressListener, ProgressPhase } from "../progress.js";
