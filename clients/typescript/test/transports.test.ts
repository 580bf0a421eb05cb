// Long-poll, the automatic fallback to it, and resuming from stored state, against a real server.
import { createServer, request as httpRequest, type Server } from "node:http"
import { afterAll, beforeAll, expect, test } from "vitest"
import { startServer } from "../../../tests/server-process.mjs"
import { type ClientOptions, DurableSessionsClient, type SessionState } from "../src/index"
import { expectResumedAfterSilence, writeRun } from "./silence"

const base = process.env.CLIENT_TEST_BASE_URL
if (!base) throw new Error("Set CLIENT_TEST_BASE_URL to the server under test, e.g. http://127.0.0.1:4437")
const target = new URL(base)

/** What the proxy does to requests besides passing them on, changed by the tests (and set back) as they go. */
interface ProxyMisbehaviour {
  /** Requests it takes and never answers (a link that died without a close). */
  hang?: (method: string, url: string) => boolean
  /** Requests whose answer it passes on up to its headers, and then nothing of its body. */
  stallBody?: (method: string, url: string) => boolean
  /** SSE responses it cuts right after the first control event has passed. */
  cutSseAfterControl?: boolean
  /** Long-polls it passes on as plain reads, which the server answers at once (a proxy that does not hold them). */
  unheldPolls?: boolean
  /** The line end SSE bodies are passed on with instead of LF. */
  sseLineEnd?: string
}

/**
 * An HTTP proxy to `to` that records every request line (and when it came), counts the response bytes it passes, can
 * refuse SSE reads (as a buffering proxy effectively does), and misbehaves as `misbehave` says.
 */
function recordingProxy(to: URL = target): Promise<{ server: Server; url: string; requests: string[]; times: number[]; bytesDown: () => number; refuseSse: { on: boolean; status?: number; times?: number; retryAfter?: string }; misbehave: ProxyMisbehaviour }> {
  const requests: string[] = []
  const times: number[] = []
  // While on, SSE reads are answered `status` (502 unless set), `times` times if set, with `retryAfter` if set.
  const refuseSse: { on: boolean; status?: number; times?: number; retryAfter?: string } = { on: false }
  const misbehave: ProxyMisbehaviour = {}
  let bytesDown = 0
  const server = createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`)
    times.push(performance.now())
    if (misbehave.hang?.(req.method!, req.url!)) return
    if (refuseSse.on && req.url?.includes("live=sse") && (refuseSse.times === undefined || refuseSse.times-- > 0)) {
      const status = refuseSse.status ?? 502
      const headers: Record<string, string> = { "content-type": "application/json" }
      if (refuseSse.retryAfter !== undefined) headers["retry-after"] = refuseSse.retryAfter
      res.writeHead(status, headers).end(JSON.stringify({ error: { code: status === 429 ? "RATE_LIMITED" : "BAD_GATEWAY", message: "refused by the test" } }))
      return
    }
    const sse = req.url?.includes("live=sse") === true
    const path = misbehave.unheldPolls ? req.url!.replace("&live=long-poll", "") : req.url
    const stall = misbehave.stallBody?.(req.method!, req.url!) === true
    const upstream = httpRequest({ host: to.hostname, port: to.port, method: req.method, path, headers: req.headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers)
      if (stall) {
        res.flushHeaders()
        return
      }
      up.on("data", (chunk: Buffer) => (bytesDown += chunk.length))
      if (sse && (misbehave.cutSseAfterControl || misbehave.sseLineEnd !== undefined)) {
        const cut = misbehave.cutSseAfterControl
        const lineEnd = misbehave.sseLineEnd
        up.on("data", (chunk: Buffer) => {
          const text = chunk.toString("utf8")
          res.write(lineEnd === undefined ? chunk : text.replaceAll("\n", lineEnd))
          if (cut && text.includes("event: control")) {
            // Ended once what was written has gone out: the control event reaches the client.
            up.destroy()
            res.end()
          }
        })
        up.on("end", () => res.writableEnded || res.end())
        return
      }
      up.pipe(res)
    })
    upstream.on("error", () => res.destroy())
    req.pipe(upstream)
  })
  // It does not pass WebSockets on, as many proxies do not: clients that try one fall back to SSE.
  server.on("upgrade", (_req, socket) => socket.destroy())
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, requests, times, bytesDown: () => bytesDown, refuseSse, misbehave })))
}

let proxy: Awaited<ReturnType<typeof recordingProxy>>
beforeAll(async () => { proxy = await recordingProxy() })
afterAll(() => { proxy.server.closeAllConnections(); proxy.server.close() })

const change = (type: string, key: string, operation: string, value: unknown) => ({ type, key, value, headers: { operation } })

/** Writes a reply of `tokens` deltas as an agent would (idempotent producer), `pauseMs` apart. */
async function streamReply(id: string, tokens: number, pauseMs: number, onToken?: (i: number) => Promise<void> | void): Promise<string> {
  let seq = 0
  const write = async (events: unknown[]) => {
    const response = await fetch(`${base}/v1/stream/sessions/${id}`, {
      method: "POST",
      headers: { "content-type": "application/json", "producer-id": "ts-transport-agent", "producer-epoch": "0", "producer-seq": String(seq++) },
      body: JSON.stringify(events),
    })
    expect(response.status).toBe(200)
  }
  let text = ""
  await write([
    change("run", "r1", "insert", { id: "r1", agent: "agent:ts", messageId: "m1", status: "started" }),
    change("message", "m1", "insert", { id: "m1", role: "assistant", runId: "r1", parts: [], status: "streaming" }),
  ])
  for (let i = 0; i < tokens; i++) {
    text += `t${i} `
    await write([change("delta", `m1:${i}`, "insert", { messageId: "m1", part: 0, text: `t${i} ` })])
    await onToken?.(i)
    await new Promise((r) => setTimeout(r, pauseMs))
  }
  await write([
    change("message", "m1", "update", { id: "m1", role: "assistant", runId: "r1", parts: [{ type: "text", text }], status: "complete" }),
    change("run", "r1", "update", { id: "r1", agent: "agent:ts", messageId: "m1", status: "finished" }),
  ])
  return text
}

const finished = (s: SessionState) => s.get("run", "r1")?.status === "finished"

/** Follows a session until `done`; returns the final state's JSON and every delta key delivered (to spot duplicates). */
async function follow(client: DurableSessionsClient, id: string, done: (s: SessionState) => boolean, stopAfter?: number) {
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 50_000)
  const deltas: string[] = []
  try {
    for await (const update of client.session(id).join(abort.signal)) {
      deltas.push(...update.events.filter((e) => e.type === "delta").map((e) => e.key!))
      if (stopAfter !== undefined && deltas.length >= stopAfter) return { json: JSON.stringify(update.state), deltas }
      if (update.upToDate && done(update.state)) return { json: JSON.stringify(update.state), deltas }
    }
    throw new Error("session ended")
  } finally {
    clearTimeout(timer)
    abort.abort()
  }
}

test("long-poll delivers the same state as SSE", async () => {
  const id = `ts-longpoll-${Date.now()}`
  const sse = new DurableSessionsClient({ baseUrl: base })
  const poll = new DurableSessionsClient({ baseUrl: proxy.url, transport: "long-poll" })
  await sse.session(id).create()
  const a = follow(sse, id, finished)
  const b = follow(poll, id, finished)
  const text = await streamReply(id, 120, 5)
  const [viaSse, viaPoll] = await Promise.all([a, b])
  expect(viaPoll.json).toBe(viaSse.json)
  expect(viaPoll.json).toContain(text)
  expect(new Set(viaPoll.deltas).size).toBe(viaPoll.deltas.length)
  const reads = proxy.requests.filter((r) => r.includes(`/v1/stream/sessions/${id}?`))
  expect(reads.length).toBeGreaterThan(1)
  expect(reads.every((r) => r.includes("live=long-poll"))).toBe(true)
})

/**
 * Follows a new session straight from the server and through the proxy (a client with `options` and short reconnect
 * delays) while a reply of `tokens` deltas is written: both end with the same state, which holds the reply.
 */
async function expectSameBehindProxy(id: string, options: Partial<ClientOptions>, tokens: number): Promise<void> {
  const steady = new DurableSessionsClient({ baseUrl: base! })
  const behindProxy = new DurableSessionsClient({ baseUrl: proxy.url, reconnectDelayMs: 5, maxReconnectDelayMs: 20, ...options })
  await steady.session(id).create()
  const a = follow(steady, id, finished)
  const b = follow(behindProxy, id, finished)
  const text = await streamReply(id, tokens, 5)
  const [expected, actual] = await Promise.all([a, b])
  expect(actual.json).toBe(expected.json)
  expect(actual.json).toContain(text)
}

test("when SSE keeps failing the client falls back to long-poll", async () => {
  const id = `ts-fallback-${Date.now()}`
  proxy.refuseSse.on = true
  try {
    await expectSameBehindProxy(id, {}, 60)
    const reads = proxy.requests.filter((r) => r.includes(`/v1/stream/sessions/${id}?`))
    expect(reads.filter((r) => r.includes("live=sse"))).toHaveLength(3)
    expect(reads.some((r) => r.includes("live=long-poll"))).toBe(true)
  } finally {
    proxy.refuseSse.on = false
  }
})

test("a join that fell back tries its first transport again once transportRetryMs has passed", async () => {
  const id = `ts-fallback-back-${Date.now()}`
  proxy.refuseSse.on = true
  try {
    const steady = new DurableSessionsClient({ baseUrl: base })
    const behindProxy = new DurableSessionsClient({ baseUrl: proxy.url, reconnectDelayMs: 5, maxReconnectDelayMs: 20, transportRetryMs: 300 })
    await steady.session(id).create()
    const a = follow(steady, id, finished)
    const b = follow(behindProxy, id, finished)
    const reads = () => proxy.requests.filter((r) => r.includes(`/v1/stream/sessions/${id}?`))

    // Down to long-poll (as after an outage that failed every transport alike); then SSE passes again.
    const deadline = Date.now() + 20_000
    while (!reads().some((r) => r.includes("live=long-poll")) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    proxy.refuseSse.on = false
    const text = await streamReply(id, 100, 10)
    const [expected, actual] = await Promise.all([a, b])
    expect(actual.json).toBe(expected.json)
    expect(actual.json).toContain(text)
    expect(new Set(actual.deltas).size).toBe(actual.deltas.length)

    // Back from long-poll: an SSE read after the first long-poll one.
    const all = reads()
    const firstPoll = all.findIndex((r) => r.includes("live=long-poll"))
    expect(firstPoll).toBeGreaterThan(0)
    expect(all.slice(firstPoll).some((r) => r.includes("live=sse"))).toBe(true)
  } finally {
    proxy.refuseSse.on = false
  }
})

test("a live read answered 429 is tried again with backoff, not the end of the join", async () => {
  const id = `ts-429-${Date.now()}`
  proxy.refuseSse.on = true
  proxy.refuseSse.status = 429
  proxy.refuseSse.times = 2
  try {
    await expectSameBehindProxy(id, { transport: "sse" }, 30)
    expect(proxy.refuseSse.times).toBeLessThanOrEqual(0)
  } finally {
    proxy.refuseSse.on = false
    proxy.refuseSse.status = undefined
    proxy.refuseSse.times = undefined
  }
})

test("a live read answered 429 with Retry-After waits that long, and the join's state callback hears why", async () => {
  const id = `ts-retry-after-${Date.now()}`
  const causes: unknown[] = []
  proxy.refuseSse.on = true
  proxy.refuseSse.status = 429
  proxy.refuseSse.times = 1
  proxy.refuseSse.retryAfter = "1"
  try {
    const steady = new DurableSessionsClient({ baseUrl: base })
    const behindProxy = new DurableSessionsClient({ baseUrl: proxy.url, transport: "sse", reconnectDelayMs: 5, maxReconnectDelayMs: 20 })
    await steady.session(id).create()
    const abort = new AbortController()
    const timer = setTimeout(() => abort.abort(), 30_000)
    try {
      for await (const update of behindProxy.session(id).join(abort.signal, (_state, cause) => cause && causes.push(cause))) {
        if (update.upToDate) break
      }
    } finally {
      clearTimeout(timer)
      abort.abort()
    }
    const reads = proxy.requests.map((r, i) => ({ r, at: proxy.times[i]! })).filter(({ r }) => r.includes(`/v1/stream/sessions/${id}?`))
    expect(reads.length).toBeGreaterThanOrEqual(2)
    // Asked for 1 s, where the client's own backoff would have waited 5 ms at most.
    expect(reads[1]!.at - reads[0]!.at).toBeGreaterThanOrEqual(950)
    expect(causes).toHaveLength(1)
    expect(causes[0]).toMatchObject({ status: 429, code: "RATE_LIMITED", retryAfterMs: 1000 })
  } finally {
    proxy.refuseSse.on = false
    proxy.refuseSse.status = undefined
    proxy.refuseSse.times = undefined
    proxy.refuseSse.retryAfter = undefined
  }
})

/**
 * Follows a new session through the proxy while it misbehaves as `misbehaviour` says, with a client of `transport` whose
 * backoff starts at 10 ms, until the proxy has seen `count` of its live reads; returns the gaps between those reads (in
 * ms) and how many updates the join delivered.
 */
async function readGaps(transport: "sse" | "long-poll", misbehaviour: ProxyMisbehaviour, count: number): Promise<{ gaps: number[]; updates: number }> {
  const id = `ts-gaps-${transport}-${Date.now()}`
  await new DurableSessionsClient({ baseUrl: base! }).session(id).create()
  const client = new DurableSessionsClient({ baseUrl: proxy.url, transport, reconnectDelayMs: 10, maxReconnectDelayMs: 5000 })
  const abort = new AbortController()
  Object.assign(proxy.misbehave, misbehaviour)
  let updates = 0
  try {
    const follower = (async () => {
      for await (const _ of client.session(id).join(abort.signal)) updates++
    })().catch(() => undefined)
    const deadline = Date.now() + 30_000
    for (;;) {
      const at = proxy.requests.flatMap((r, i) => (r.includes(`/v1/stream/sessions/${id}?`) && r.includes(`live=${transport}`) ? [proxy.times[i]!] : []))
      if (at.length >= count) {
        abort.abort()
        await follower
        return { gaps: at.slice(1, count).map((t, i) => t - at[i]!), updates }
      }
      if (Date.now() > deadline) throw new Error(`only ${at.length} of ${count} reads came`)
      await new Promise((r) => setTimeout(r, 10))
    }
  } finally {
    for (const key of Object.keys(misbehaviour)) delete proxy.misbehave[key as keyof ProxyMisbehaviour]
    abort.abort()
  }
}

test("reads cut right after their first update reconnect with a growing backoff, not at the shortest delay each time", async () => {
  const { gaps, updates } = await readGaps("sse", { cutSseAfterControl: true }, 7)
  // Every read delivered its update before it was cut (the join never fell back) ...
  expect(updates).toBeGreaterThanOrEqual(7)
  // ... and the waits doubled from 10 ms: the last two at least 80 and 160 ms with jitter (half to all), where a backoff
  // started over by each delivery stays at 5-10 ms.
  expect(gaps[4]! + gaps[5]!).toBeGreaterThanOrEqual(100)
})

test("long-polls answered at once with nothing are spaced out, not sent in a tight loop", async () => {
  const { gaps } = await readGaps("long-poll", { unheldPolls: true }, 8)
  expect(gaps[5]! + gaps[6]!).toBeGreaterThanOrEqual(100)
})

test("a snapshot or an operation whose answer never comes is given up on, not waited for forever", async () => {
  const id = `ts-hung-${Date.now()}`
  const direct = new DurableSessionsClient({ baseUrl: base })
  await direct.session(id).create()
  await direct.session(id).sendMessage("already there")
  let hungSnapshots = 1
  proxy.misbehave.hang = (method, url) =>
    (method === "GET" && url === `/v1/sessions/${id}` && hungSnapshots-- > 0) || (method === "POST" && url === `/v1/sessions/${id}/messages`)
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(new Error("the join waited on the hung snapshot")), 15_000)
  try {
    const client = new DurableSessionsClient({ baseUrl: proxy.url, transport: "sse", idleTimeoutMs: 500, operationTimeoutMs: 500 })
    const first = await client.session(id).join(abort.signal).next()
    expect(first.done).toBe(false)
    expect(JSON.stringify(first.value!.state)).toContain("already there")
    expect(proxy.requests.filter((r) => r === `GET /v1/sessions/${id}`)).toHaveLength(2)

    const started = performance.now()
    await expect(client.session(id).sendMessage("never answered")).rejects.toThrow(/did not answer POST \/v1\/sessions\/.+\/messages within 500 ms/)
    expect(performance.now() - started).toBeLessThan(10_000)

    // An answer whose headers come and whose body never does fails the same way.
    proxy.misbehave.hang = undefined
    proxy.misbehave.stallBody = (method, url) => method === "POST" && url === `/v1/sessions/${id}/messages`
    await expect(client.session(id).sendMessage("answered halfway")).rejects.toThrow(/did not finish answering POST \/v1\/sessions\/.+\/messages within 500 ms/)
  } finally {
    clearTimeout(timer)
    abort.abort()
    proxy.misbehave.hang = undefined
    proxy.misbehave.stallBody = undefined
  }
})

test.each([["a lone CR", "\r"], ["CRLF", "\r\n"]])("SSE lines ended by %s are read as by LF", async (_name, lineEnd) => {
  const id = `ts-line-ends-${lineEnd.length}-${Date.now()}`
  proxy.misbehave.sseLineEnd = lineEnd
  try {
    await expectSameBehindProxy(id, { transport: "sse" }, 40)
    const reads = proxy.requests.filter((r) => r.includes(`/v1/stream/sessions/${id}?`))
    expect(reads.length).toBeGreaterThan(0)
    expect(reads.every((r) => r.includes("live=sse"))).toBe(true)
  } finally {
    proxy.misbehave.sseLineEnd = undefined
  }
})

test("a new join with the same storage resumes from the stored offset, not the snapshot", async () => {
  const id = `ts-stored-${Date.now()}`
  const items = new Map<string, string>()
  const storage = { getItem: (k: string) => items.get(k) ?? null, setItem: (k: string, v: string) => void items.set(k, v), removeItem: (k: string) => void items.delete(k) }
  const steady = new DurableSessionsClient({ baseUrl: base })
  await steady.session(id).create()
  const expected = follow(steady, id, finished)

  // The first "page" leaves after 40 deltas (as a reload would); the second one starts while the reply still streams.
  let second: ReturnType<typeof follow> | undefined
  const first = follow(new DurableSessionsClient({ baseUrl: proxy.url, storage }), id, finished, 40)
  const text = await streamReply(id, 150, 8, async (i) => {
    if (i === 90) {
      await first
      const stored = JSON.parse(items.get(`durable-sessions:${id}`)!) as { offset: string }
      expect(stored.offset).toMatch(/^\d+_\d+$/)
      proxy.requests.length = 0
      second = follow(new DurableSessionsClient({ baseUrl: proxy.url, storage }), id, finished)
    }
  })
  const [wanted, resumed] = await Promise.all([expected, second!])
  expect(resumed.json).toBe(wanted.json)
  expect(resumed.json).toContain(text)
  expect(new Set(resumed.deltas).size).toBe(resumed.deltas.length)
  expect(resumed.deltas.length).toBeLessThan(150) // what the first page had already seen was not read again
  expect(proxy.requests.some((r) => r.startsWith(`GET /v1/sessions/${id}`))).toBe(false)
  expect(proxy.requests.find((r) => r.includes(`/v1/stream/sessions/${id}?`))).not.toContain("offset=-1")

  // A stored offset the server does not know (the session was deleted and made again) falls back to the snapshot.
  items.set(`durable-sessions:${id}`, JSON.stringify({ offset: "9999999999999999_9999999999999999", state: [] }))
  const recovered = await follow(new DurableSessionsClient({ baseUrl: base, storage }), id, finished)
  expect(recovered.json).toBe(wanted.json)
})

// The test server answers a long-poll within 1 s, well inside the 2.5 s idle timeout: only the silenced link is taken for
// dead. (An SSE read between events may be resumed too, as its keep-alive comes every 15 s: that costs a request, and
// nothing is delivered twice.)
test.each(["sse", "long-poll"] as const)("a %s read on a link that went silent without closing resumes on a new request", async (transport) => {
  await expectResumedAfterSilence(base!, { transport, idleTimeoutMs: 2500 }, `ts-idle-${transport}`, 15_000, 30_000)
})

test("an SSE read kept alive by the server's keep-alives, or paused by a busy page, keeps its one request", async () => {
  // A server of its own, with a keep-alive every 200 ms: well inside the 1 s idle timeout, which only a dead link passes.
  const server = await startServer(["--no-agent", "--DurableStreams:SseKeepAliveInterval=00:00:00.200"])
  const recorder = await recordingProxy(new URL(server.url))
  const client = new DurableSessionsClient({ baseUrl: recorder.url, transport: "sse", idleTimeoutMs: 1000 })
  const id = `ts-alive-${Date.now()}`
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(new Error("the run never finished")), 30_000)
  try {
    await new DurableSessionsClient({ baseUrl: server.url }).session(id).create()
    let resumed!: (bytes: number) => void
    const busyDone = new Promise<number>((resolve) => (resumed = resolve))
    const follower = (async () => {
      let busy = false
      for await (const update of client.session(id).join(abort.signal)) {
        if (update.upToDate && !busy) {
          // A page busy with an update for 2.5 s: only time spent waiting on the network counts.
          busy = true
          await new Promise((r) => setTimeout(r, 2500))
          resumed(recorder.bytesDown())
        }
        if (update.upToDate && (update.state as SessionState).get("run", "r1")?.status === "finished") return
      }
      throw new Error("session ended")
    })()
    const bytes = await Promise.race([busyDone, follower.then(() => 0)])

    // Then a quiet stream: nothing but keep-alives (each at least 3 bytes, about 10 with its chunk's framing) until
    // 150 more bytes have passed, well over a second.
    while (recorder.bytesDown() < bytes + 150) await new Promise((r) => setTimeout(r, 50))
    await writeRun(server.url, id, "ts-alive-agent")
    await follower
    expect(recorder.requests.filter((r) => r.includes(`/v1/stream/sessions/${id}?`))).toHaveLength(1)
  } finally {
    clearTimeout(timer)
    abort.abort()
    recorder.server.closeAllConnections()
    recorder.server.close()
    await server.stop()
  }
})

test("an idle timeout that setTimeout cannot hold is refused", () => {
  for (const idleTimeoutMs of [0, -1, Number.NaN, 2 ** 31]) {
    expect(() => new DurableSessionsClient({ baseUrl: base!, idleTimeoutMs })).toThrow(/idleTimeoutMs/)
  }
})

test("over HTTP a busy session is sent again after its Retry-After, and a server error fails the operation", async () => {
  const native = globalThis.fetch
  let busy = 2
  let broken = false
  let unavailable = false
  const posted: number[] = []
  globalThis.fetch = async (input: RequestInfo | URL, init?: RequestInit) => {
    const url = String(input)
    if (init?.method === "POST" && url.endsWith("/messages")) {
      if (broken) return new Response(JSON.stringify({ error: { code: "INTERNAL", message: "it broke" } }), { status: 500 })
      if (unavailable) {
        posted.push(503)
        return new Response(JSON.stringify({ error: { code: "STORE_UNAVAILABLE", message: "away" } }), { status: 503, headers: { "retry-after": "0" } })
      }
      if (busy-- > 0) {
        posted.push(503)
        return new Response(JSON.stringify({ error: { code: "SESSION_BUSY", message: "busy" } }), { status: 503, headers: { "retry-after": "0" } })
      }
      posted.push(201)
    }
    return native(input, init)
  }
  try {
    const client = new DurableSessionsClient({ baseUrl: base, transport: "sse" })
    const session = client.session(`busy-${Date.now()}`)
    await session.create()
    const id = await session.sendMessage("hello")
    expect(typeof id).toBe("string")
    expect(posted).toEqual([503, 503, 201])

    // A 500 is no answer: the promise rejects, where it used to resolve with the error body read as one. A 503 that may
    // have stored the message (the store was away) is not sent again.
    broken = true
    await expect(session.sendMessage("again")).rejects.toThrow(/INTERNAL: it broke/)
    broken = false
    unavailable = true
    const before = posted.length
    await expect(session.sendMessage("once more")).rejects.toThrow(/STORE_UNAVAILABLE/)
    expect(posted.length).toBe(before + 1)
  } finally {
    globalThis.fetch = native
  }
})
