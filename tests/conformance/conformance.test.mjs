import { runConformanceTests } from "@durable-streams/server-conformance-tests"

const baseUrl = process.env.CONFORMANCE_BASE_URL
if (!baseUrl) {
  throw new Error("Set CONFORMANCE_BASE_URL to the server under test, e.g. http://127.0.0.1:4437")
}

runConformanceTests({
  baseUrl,
  subscriptions: true,
  longPollTimeoutMs: Number(process.env.CONFORMANCE_LONG_POLL_TIMEOUT_MS ?? 1000),
})
