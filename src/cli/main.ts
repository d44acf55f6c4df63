#!/usr/bin/env node
/** The `meshguard` executable: see ./run.ts and the table in ./commands.ts. */

import { runCli } from "./run.js";

process.exitCode = await runCli(process.argv.slice(2));
