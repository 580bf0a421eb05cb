// The client against a real server, through a proxy that cuts connections at random byte positions.
import { createConnection, createServer, type Server, type Socket } from "node:net"
import { afterAll, beforeAll, expect, test } from "vitest"
import { DurableSessionsClient, type SessionState } from "../src/index"

const base = process.env.CLIENT_TEST_BASE_URL
if (!base) throw new Error("Set CLIENT_TEST_BASE_URL to the server under test, e.g. http://127.0.0.1:4437")
const target = new URL(base)

/** Cuts each proxied connection after a random number of response bytes, until `maxCuts` cuts were made. */
function chaosProxy(maxCuts: number): Promise<{ server: Server; port: number; cuts: () => number }> {
  let cuts = 0
  const server = createServer((client: Socket) => {
    const upstream = createConnection({ host: target.hostname, port: Number(target.port) })
    let budget = cuts < maxCuts ? 1 + Math.floor(Math.random() * 3000) : Infinity
    client.pipe(upstream)
    upstream.on("data", (chunk: Buffer) => {
      if (chunk.length >= budget && cuts < maxCuts) {
        cuts++
        client.write(chunk.subarray(0, budget))
        client.resetAndDestroy()
        upstream.destroy()
        return
      }
      budget -= chunk.length
      client.write(chunk)
    })
    upstream.on("error", () => client.destroy())
    client.on("error", () => upstream.destroy())
    upstream.on("close", () => client.end())
  })
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ server, port: (server.address() as { port: number }).port, cuts: () => cuts })))
}

let proxy: Awaited<ReturnType<typeof chaosProxy>>
beforeAll(async () => { proxy = await chaosProxy(100) })
afterAll(() => { proxy.server.close() })

async function write(sessionId: string, seq: number, events: unknown[]): Promise<void> {
  const response = await fetch(`${base}/v1/stream/sessions/${sessionId}`, {
    method: "POST",
    headers: { "content-type": "application/json", "producer-id": "ts-test-agent", "producer-epoch": "0", "producer-seq": String(seq) },
    body: JSON.stringify(events),
  })
  expect(response.status).toBe(200)
}

const change = (type: string, key: string, operation: string, value: unknown) => ({ type, key, value, headers: { operation } })

async function follow(client: DurableSessionsClient, id: string, done: (s: SessionState) => boolean): Promise<string> {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 55_000)
  try {
    for await (const update of client.session(id).join(abort.signal)) {
      if (update.upToDate && done(update.state)) return JSON.stringify(update.state)
    }
    throw new Error("session ended")
  } finally {
    clearTimeout(timer)
    abort.abort()
  }
}

test("a client cut at 100 random points ends identical to an uninterrupted one", async () => {
  const id = `ts-chaos-${Date.now()}`
  const steady = new DurableSessionsClient({ baseUrl: base })
  const flaky = new DurableSessionsClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, reconnectDelayMs: 5, maxReconnectDelayMs: 100 })
  await steady.session(id).create()
  const finished = (s: SessionState) => s.get("run", "r1")?.status === "finished"
  const flakyDone = follow(flaky, id, finished)
  const steadyDone = follow(steady, id, finished)

  let seq = 0
  let text = ""
  await write(id, seq++, [
    change("run", "r1", "insert", { id: "r1", agent: "agent:ts", messageId: "m1", status: "started" }),
    change("message", "m1", "insert", { id: "m1", role: "assistant", runId: "r1", parts: [], status: "streaming" }),
  ])
  for (let i = 0; i < 300; i++) {
    const tokens = [`w${i}a `, `w${i}b `]
    text += tokens.join("")
    await write(id, seq++, tokens.map((t, j) => change("delta", `m1:${i}:${j}`, "insert", { messageId: "m1", part: 0, text: t })))
    await new Promise((r) => setTimeout(r, 8))
  }
  await write(id, seq++, [
    change("message", "m1", "update", { id: "m1", role: "assistant", runId: "r1", parts: [{ type: "text", text }], status: "complete" }),
    change("run", "r1", "update", { id: "r1", agent: "agent:ts", messageId: "m1", status: "finished" }),
  ])

  const [a, b] = await Promise.all([flakyDone, steadyDone])
  expect(a).toBe(b)
  expect(a).toContain(text)
  expect(proxy.cuts()).toBeGreaterThanOrEqual(100)
})

test("send, materialize and cancel with the hosted agent", async () => {
  const id = `ts-agent-${Date.now()}`
  const client = new DurableSessionsClient({ baseUrl: base, participantId: "client:ts" })
  const session = client.session(id)
  await session.create()
  const messageId = await session.sendMessage("Hello from TypeScript")
  const states: string[] = []
  const abort = new AbortController()
  for await (const update of session.join(abort.signal, (s) => states.push(s))) {
    const run = update.state.all("run").find((r) => r.trigger === messageId)
    if (update.upToDate && run?.status === "finished") {
      const reply = update.state.get("message", String(run.messageId))!
      expect((reply.parts as { text: string }[])[0]!.text.length).toBeGreaterThan(20)
      break
    }
  }
  abort.abort()
  expect(states).toContain("live")
  await expect(session.cancel("no-such-run")).rejects.toMatchObject({ status: 409, code: "RUN_NOT_FOUND" })
})
