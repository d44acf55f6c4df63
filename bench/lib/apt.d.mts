/** aptInstall installs a Debian package with apt-get; undefined when it did, else why not. */
export function aptInstall(pkg: string, opts?: { update?: "first" | "on-failure" }): string | undefined;
