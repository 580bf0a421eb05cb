import { defineConfig } from "vitest/config"

// The WebSocket test needs a WebSocket global: browsers and Node 22 have one, Node 20 with --experimental-websocket.
// test.sh runs the suite twice, without it (SSE, then long-poll) and with it (the WebSocket first).
const webSocket = typeof WebSocket !== "undefined"

export default defineConfig({
  test: {
    include: ["test/*.test.ts"],
    exclude: webSocket ? [] : ["test/websocket.test.ts", "test/websocket-token.test.ts"],
    testTimeout: 60_000,
    fileParallelism: false,
  },
})
