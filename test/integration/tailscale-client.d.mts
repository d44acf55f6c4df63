// Types of ./tailscale-client.mjs for the TypeScript tests (see that file's header).
export const TAILSCALE_VERSION: string;
export const TAILSCALE_DIR: string;
export const TAILSCALED_BIN: string;
export const TAILSCALE_BIN: string;
export function ready(): boolean;
export function ensure(log?: (line: string) => void): boolean;
