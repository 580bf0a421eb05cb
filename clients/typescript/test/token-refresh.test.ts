// A live tail that outlives its tokens: the server (with access control on) ends a live read when its token expires,
// and the client reconnects from its offset with the token function's next token, losing and repeating nothing.
import { afterAll, beforeAll, expect, test } from "vitest"
import { startServer } from "../../../tests/server-process.mjs"
import { DurableSessionsClient } from "../src/index"
import { collectMessages, jwt, waitFor } from "./tokens"

const key = "token-refresh-test-key-of-32-bytes-or-more"
let server: { url: string; stop(): Promise<void> }

beforeAll(async () => {
  server = await startServer(["--no-agent", `--Auth:SigningKey=${key}`, "--Auth:ClockSkew=00:00:00"])
})
afterAll(async () => { await server?.stop() })

const token = (subject: string, grants: Record<string, string[]>, lifetimeSeconds: number) => jwt(key, subject, grants, lifetimeSeconds)

test("a token that expires during a live tail is refreshed and the tail resumes from its offset, every message exactly once", async () => {
  const writer = token("user:writer", { "sessions/**": ["read", "write", "control", "admin"] }, 300)
  const post = (path: string, body: unknown, method = "POST") =>
    fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${writer}`, "content-type": "application/json" }, body: JSON.stringify(body) })
  expect((await post("/v1/sessions/refresh", {}, "PUT")).status).toBe(201)

  let issued = 0
  const client = new DurableSessionsClient({
    baseUrl: server.url,
    participantId: "client:reader",
    transport: "sse",
    // Each token lives two seconds at most (one to two: expiry is in whole seconds).
    token: () => {
      issued++
      return token("client:reader", { "sessions/refresh": ["read"] }, 2)
    },
  })

  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 55_000)
  const texts: string[] = []
  const tail = collectMessages(client, "refresh", texts, 30, abort.signal)

  // Ten messages, then ten more after each of two token refreshes: each live read ends when its token expires.
  await waitFor(() => issued >= 2, "the join (snapshot and live read)")
  for (let round = 0; round < 3; round++) {
    const before = issued
    for (let n = round * 10; n < (round + 1) * 10; n++) expect((await post("/v1/sessions/refresh/messages", { text: `m${n}` })).status).toBe(201)
    if (round < 2) await waitFor(() => issued > before, `a reconnect with a fresh token after round ${round}`)
  }

  await tail
  clearTimeout(timer)
  abort.abort()
  expect(texts).toEqual(Array.from({ length: 30 }, (_, n) => `m${n}`))
  expect(issued).toBeGreaterThanOrEqual(4)
})
