import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts", "src/**/*.test.ts", "bench/**/*.test.mjs"],
    root: new URL("..", import.meta.url).pathname,
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: "forks",
    // Each file is its own process: one Go runtime per process, and several
    // tailnets at once would starve two cores.
    fileParallelism: false,
    reporters: ["default", "json"],
    outputFile: { json: ".cache/vitest-report.json" },
  },
});
