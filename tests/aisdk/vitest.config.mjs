import { defineConfig } from "vitest/config"

export default defineConfig({
  test: {
    include: ["*.test.mjs"],
    testTimeout: 60_000,
    // The tests share one server; run them one after another so their timings do not interfere.
    fileParallelism: false,
  },
})
