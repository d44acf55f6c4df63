/**
 * The config sections owned by the gateway's other parts (quotas, hooks,
 * store). Each part exports its own zod schema; this file is the one place
 * the config schema takes them from, so wiring a part in is one line here.
 */

import { z } from "zod";

export const GATEWAY_PARTS = {
  quotas: z.unknown(),
  hooks: z.unknown(),
  retention: z.unknown(),
  storage: z.unknown(),
};
