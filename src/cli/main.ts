#!/usr/bin/env -S node --max-semi-space-size=16
/**
 * The `meshguard` executable: see ./run.ts and the table in ./commands.ts.
 *
 * --max-semi-space-size bounds V8's young generation. Left alone, a Node
 * build without pointer compression (the official ones) doubles it under
 * steady load up to 64 MB semi-spaces, all resident: a long-running
 * `meshguard gateway` grew by ~60 MB that way, with nothing retained. 16 MB
 * is reached within the first few thousand requests and then stays.
 * bench/gateway starts its gateway process with the flags of this line.
 */

import { runCli } from "./run.js";

process.exitCode = await runCli(process.argv.slice(2));
