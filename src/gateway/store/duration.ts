// Durations are parsed by the policy layer (one syntax for a config's retention and a token rule's maxTtl).
export { DURATION_HINT, parseDuration } from "../../policy/duration.js";
