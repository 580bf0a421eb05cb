import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["*.test.mjs"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // One server and one browser for the whole suite; tests run one after another so timings do not interfere.
    fileParallelism: false,
  },
})
