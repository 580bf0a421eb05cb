// A WebSocket that outlives its tokens: the client replaces the socket's token before it expires, so the server never
// closes it (4401) and the session's subscription goes on, on the socket it was opened on.
// Included where a WebSocket global exists (vitest.config.mjs), as websocket.test.ts.
import { afterAll, beforeAll, expect, test } from "vitest"
import { startServer } from "../../../tests/server-process.mjs"
import { DurableSessionsClient } from "../src/index"
import { collectMessages, jwt, waitFor } from "./tokens"

const key = "websocket-token-test-key-of-32-bytes-or-more"
let server: { url: string; stop(): Promise<void> }

beforeAll(async () => {
  server = await startServer(["--no-agent", `--Auth:SigningKey=${key}`, "--Auth:ClockSkew=00:00:00"])
})
afterAll(async () => { await server?.stop() })

const token = (subject: string, grants: Record<string, string[]>, lifetimeSeconds: number) => jwt(key, subject, grants, lifetimeSeconds)

test("a token that expires while a session follows over the WebSocket is replaced on the open socket, every message once", async () => {
  const opened: string[] = []
  const closes: number[] = []
  let refreshes = 0
  const Native = globalThis.WebSocket
  globalThis.WebSocket = class extends Native {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols)
      opened.push(String(url))
      this.addEventListener("close", (event) => closes.push(event.code))
    }

    send(data: string | ArrayBufferLike | Blob | ArrayBufferView) {
      if (typeof data === "string" && data.includes('"op":"auth"')) refreshes++
      super.send(data)
    }
  } as typeof WebSocket
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 55_000)
  try {
    const writer = token("user:writer", { "sessions/**": ["read", "write", "control", "admin"] }, 300)
    const post = (path: string, body: unknown, method = "POST") =>
      fetch(`${server.url}${path}`, { method, headers: { authorization: `Bearer ${writer}`, "content-type": "application/json" }, body: JSON.stringify(body) })
    expect((await post("/v1/sessions/ws-refresh", {}, "PUT")).status).toBe(201)

    const client = new DurableSessionsClient({
      baseUrl: server.url,
      participantId: "client:reader",
      transport: "websocket",
      // Each token lives six seconds: the socket's is replaced after four and a half.
      token: () => token("client:reader", { "sessions/ws-refresh": ["read"] }, 6),
    })

    const texts: string[] = []
    const tail = collectMessages(client, "ws-refresh", texts, 30, abort.signal)

    await waitFor(() => opened.length === 1, "the socket")
    // Ten messages, then ten more after each of two refreshes: each round outlives the token the socket had before it.
    for (let round = 0; round < 3; round++) {
      for (let n = round * 10; n < (round + 1) * 10; n++) expect((await post("/v1/sessions/ws-refresh/messages", { text: `m${n}` })).status).toBe(201)
      if (round < 2) await waitFor(() => refreshes > round, `a token refresh after round ${round}`)
    }
    // A third refresh comes after the second token expired (at 4.5 s + 6 s): the socket outlived the first two tokens,
    // which would each have closed it with 4401.
    await waitFor(() => refreshes >= 3, "a third refresh")
    await waitFor(() => texts.length >= 30, "every message")
    await tail
    client.close()

    expect(texts).toEqual(Array.from({ length: 30 }, (_, n) => `m${n}`))
    expect(opened).toHaveLength(1)
    expect(closes.filter((code) => code === 4401)).toEqual([])
  } finally {
    clearTimeout(timer)
    abort.abort()
    globalThis.WebSocket = Native
  }
})
