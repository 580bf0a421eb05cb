// One WebSocket per client for every session it follows, resuming each from its offset after the socket drops.
// Included where a WebSocket global exists (vitest.config.mjs): test.sh runs the suite once more with
// NODE_OPTIONS=--experimental-websocket.
import { expect, test } from "vitest"
import { DurableSessionsClient, type SessionEvent, type SessionState } from "../src/index"
import { expectResumedAfterSilence, followUntilRunFinished, silencingProxy } from "./silence"

const base = process.env.CLIENT_TEST_BASE_URL
if (!base) throw new Error("Set CLIENT_TEST_BASE_URL to the server under test, e.g. http://127.0.0.1:4437")

const change = (type: string, key: string, operation: string, value: unknown) => ({ type, key, value, headers: { operation } })

async function write(id: string, producer: string, seq: number, events: unknown[]) {
  const response = await fetch(`${base}/v1/stream/sessions/${id}`, {
    method: "POST",
    headers: { "content-type": "application/json", "producer-id": producer, "producer-epoch": "0", "producer-seq": String(seq) },
    body: JSON.stringify(events),
  })
  expect(response.status).toBe(200)
}

test("twelve sessions follow live over one WebSocket and resume after it drops, each delta once", async () => {
  const opened: string[] = []
  const Native = globalThis.WebSocket
  globalThis.WebSocket = class extends Native {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols)
      opened.push(String(url))
    }
  } as typeof WebSocket
  const client = new DurableSessionsClient({ baseUrl: base!, transport: "websocket", reconnectDelayMs: 5, maxReconnectDelayMs: 50 })
  const ids = Array.from({ length: 12 }, (_, i) => `ts-ws-${Date.now()}-${i}`)
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 50_000)
  try {
    for (const id of ids) await client.session(id).create()
    // Each follower has its snapshot before anything is written, so every delta reaches it as an event.
    const joined: (() => void)[] = []
    const allJoined = Promise.all(ids.map(() => new Promise<void>((resolve) => joined.push(resolve))))
    const followers = ids.map(async (id, n) => {
      const deltas: string[] = []
      for await (const update of client.session(id).join(abort.signal)) {
        joined[n]()
        deltas.push(...update.events.filter((e) => e.type === "delta").map((e) => e.key!))
        if (update.upToDate && (update.state as SessionState).get("run", "r1")?.status === "finished") return deltas
      }
      throw new Error("session ended")
    })

    // A follower that fails before its snapshot fails the test here, rather than leave it waiting.
    await Promise.race([allJoined, Promise.all(followers)])

    // Each session gets a reply of 40 deltas; the socket is dropped twice while they stream.
    for (const [n, id] of ids.entries()) {
      await write(id, `ws-agent-${n}`, 0, [change("run", "r1", "insert", { id: "r1", agent: "agent:ts", messageId: "m1", status: "started" })])
    }
    for (let i = 0; i < 40; i++) {
      await Promise.all(ids.map((id, n) => write(id, `ws-agent-${n}`, i + 1, [change("delta", `m1:${i}`, "insert", { messageId: "m1", part: 0, text: `t${i} ` })])))
      if (i === 10 || i === 25) client.close()
    }
    await Promise.all(ids.map((id, n) => write(id, `ws-agent-${n}`, 41, [change("run", "r1", "update", { id: "r1", agent: "agent:ts", messageId: "m1", status: "finished" })])))

    const results = await Promise.all(followers)
    for (const deltas of results) {
      expect(deltas).toEqual(Array.from({ length: 40 }, (_, i) => `m1:${i}`))
    }
    // One socket at a time for all twelve: the first, and one after each drop.
    expect(opened.length).toBe(3)
    expect(opened.every((url) => url.endsWith("/v1/ws"))).toBe(true)
  } finally {
    clearTimeout(timer)
    abort.abort()
    client.close()
    globalThis.WebSocket = Native
  }
})

test("a follower that stops taking updates is dropped past its queue's bound and resumes from its offset, each delta once", async () => {
  const Native = globalThis.WebSocket
  const sent: string[] = []
  globalThis.WebSocket = class extends Native {
    send(data: string) {
      sent.push(String(data))
      super.send(data)
    }
  } as typeof WebSocket
  const client = new DurableSessionsClient({ baseUrl: base!, transport: "websocket", reconnectDelayMs: 5, maxReconnectDelayMs: 50 })
  client.sockets.maxQueuedLength = 20_000
  const id = `ts-ws-slow-${Date.now()}`
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 50_000)
  try {
    await client.session(id).create()
    const updates = client.session(id).join(abort.signal)[Symbol.asyncIterator]()
    // Taken up to the live tail, then not taken while 200 deltas of ~300 characters arrive (about 60,000 in all).
    for (let next = await updates.next(); !next.value!.upToDate; next = await updates.next()) { /* catching up */ }
    const unsubscribesBefore = sent.filter((m) => m.includes('"op":"unsubscribe"')).length
    const pad = "x".repeat(300)
    await write(id, "slow-agent", 0, [change("run", "r1", "insert", { id: "r1", agent: "agent:ts", messageId: "m1", status: "started" })])
    for (let i = 0; i < 200; i++) await write(id, "slow-agent", i + 1, [change("delta", `m1:${i}`, "insert", { messageId: "m1", part: 0, text: `${pad}${i} ` })])
    await write(id, "slow-agent", 201, [change("run", "r1", "update", { id: "r1", agent: "agent:ts", messageId: "m1", status: "finished" })])
    const deadline = Date.now() + 20_000
    while (sent.filter((m) => m.includes('"op":"unsubscribe"')).length === unsubscribesBefore && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20))
    expect(sent.filter((m) => m.includes('"op":"unsubscribe"')).length).toBeGreaterThan(unsubscribesBefore)

    // Taken again: what was dropped comes again from the offset delivered last, and nothing twice.
    const deltas: string[] = []
    for (let next = await updates.next(); !next.done; next = await updates.next()) {
      deltas.push(...next.value.events.filter((e) => e.type === "delta").map((e) => e.key!))
      if (next.value.upToDate && (next.value.state as SessionState).get("run", "r1")?.status === "finished") break
    }
    expect(deltas).toEqual(Array.from({ length: 200 }, (_, i) => `m1:${i}`))
    expect(sent.filter((m) => m.includes('"op":"subscribe"')).length).toBeGreaterThanOrEqual(2)
    await updates.return?.(undefined)
  } finally {
    clearTimeout(timer)
    abort.abort()
    client.close()
    globalThis.WebSocket = Native
  }
})

test("messages, steer, cancel and presence go over the WebSocket and answer as over HTTP", async () => {
  const native = { fetch: globalThis.fetch, WebSocket: globalThis.WebSocket }
  const posted: string[] = []
  let sockets = 0
  globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
    if ((init?.method ?? "GET") === "POST") posted.push(String(input))
    return native.fetch(input, init)
  }) as typeof fetch
  globalThis.WebSocket = class extends native.WebSocket {
    constructor(url: string | URL, protocols?: string | string[]) {
      super(url, protocols)
      sockets++
    }
  } as typeof WebSocket
  const client = new DurableSessionsClient({ baseUrl: base!, participantId: "client:ts-ws" })
  const id = `ts-ws-ops-${Date.now()}`
  const session = client.session(id)
  try {
    await session.create()
    const writeRun = native.fetch(`${base}/v1/stream/sessions/${id}`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify([change("run", "r1", "insert", { id: "r1", agent: "agent:ts", messageId: "m-r1", status: "started" })]),
    })
    expect((await writeRun).status).toBe(204)
    posted.length = 0

    const messageId = await session.sendMessage("Hello over the socket")
    expect(messageId).toMatch(/.+/)
    expect(await session.heartbeat("client", "Socket tab")).toBeGreaterThan(0)
    const steer = await session.steer("r1", "shorter, please")
    expect(steer.offset).toMatch(/^\d+_\d+$/)
    // With an id of its own, a control sent again (after an unknown outcome) is answered again and stored once.
    expect((await session.steer("r1", "again, once", { id: "c-ts-1" })).controlId).toBe("c-ts-1")
    expect((await session.steer("r1", "again, once", { id: "c-ts-1" })).controlId).toBe("c-ts-1")
    await expect(session.steer("r1", "x", { id: "not ok" })).rejects.toMatchObject({ status: 400, code: "INVALID_CONTROL_ID" })
    const cancel = await session.cancel("r1", { id: "c-ts-2" })
    expect(cancel.controlId).toBe("c-ts-2")
    expect(cancel.offset).toMatch(/^\d+_\d+$/)
    expect(cancel.offset > steer.offset).toBe(true)
    // The run has ended since; the same cancel is still acknowledged.
    expect((await session.cancel("r1", { id: "c-ts-2" })).controlId).toBe("c-ts-2")
    // Refusals carry the endpoint's status and code, as over HTTP.
    await expect(session.cancel("no-such-run")).rejects.toMatchObject({ status: 409, code: "RUN_NOT_FOUND" })
    await expect(client.session("no-such-session-ws").sendMessage("anyone?")).rejects.toMatchObject({ status: 404 })

    // A message larger than the socket's largest (the server's hello says 1 MiB) goes over HTTP, where it is refused
    // alone (413), instead of closing the socket under every session on it.
    await expect(session.sendMessage("x".repeat(1_200_000))).rejects.toMatchObject({ status: 413 })
    expect(posted).toEqual([`${base}/v1/sessions/${id}/messages`])
    posted.length = 0
    expect(await session.heartbeat("client", "Socket tab")).toBeGreaterThan(0)
    expect(sockets).toBe(1)

    // After the socket drops, the next operation opens a new one.
    client.close()
    expect(await session.heartbeat("client", "Socket tab")).toBeGreaterThan(0)

    expect(posted).toEqual([])
    expect(sockets).toBe(2)
    const snapshot = (await (await native.fetch(`${base}/v1/sessions/${id}`)).json()) as SessionEvent[]
    const message = snapshot.find((e) => e.type === "message" && e.key === messageId)?.value as { parts: { text: string }[]; author: string }
    expect(message.parts[0]!.text).toBe("Hello over the socket")
    expect(message.author).toBe("client:ts-ws")
    expect(snapshot.some((e) => e.type === "presence" && e.key === "client:ts-ws" && e.value?.status === "joined")).toBe(true)
    expect(snapshot.filter((e) => e.type === "control").map((e) => e.key)).toEqual([steer.controlId, "c-ts-1", "c-ts-2"])
  } finally {
    client.close()
    globalThis.fetch = native.fetch
    globalThis.WebSocket = native.WebSocket
  }
})

test("regenerate and edit go over the WebSocket: the agent writes the reply again in the same message", async () => {
  const native = globalThis.fetch
  const posted: string[] = []
  globalThis.fetch = ((input: string | URL | Request, init?: RequestInit) => {
    if ((init?.method ?? "GET") === "POST") posted.push(String(input))
    return native(input, init)
  }) as typeof fetch
  const client = new DurableSessionsClient({ baseUrl: base!, participantId: "client:ts-regen" })
  const id = `ts-ws-regen-${Date.now()}`
  const session = client.session(id)
  const snapshot = async () => (await (await native(`${base}/v1/sessions/${id}`)).json()) as SessionEvent[]
  const finishedRuns = async (count: number) => {
    const deadline = Date.now() + 30_000
    for (;;) {
      const events = await snapshot()
      if (events.filter((e) => e.type === "run" && e.value?.status === "finished").length >= count) return events
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${count} finished runs`)
      await new Promise((r) => setTimeout(r, 50))
    }
  }
  try {
    await session.create()
    const question = await session.sendMessage("What is an offset?")
    const first = await finishedRuns(1)
    const reply = first.find((e) => e.type === "message" && e.value?.role === "assistant")!
    posted.length = 0

    const ack = await session.regenerate(reply.key, { id: "c-ts-regen" })
    expect(ack.controlId).toBe("c-ts-regen")
    // The same request again (a retry with its id) is the request already made: nothing new is stored.
    expect((await session.regenerate(reply.key, { id: "c-ts-regen" })).controlId).toBe("c-ts-regen")
    await expect(session.regenerate("m-missing")).rejects.toMatchObject({ status: 409, code: "MESSAGE_NOT_FOUND" })
    await expect(session.regenerate("not ok")).rejects.toMatchObject({ status: 400, code: "INVALID_MESSAGE_ID" })

    const after = await finishedRuns(2)
    const replies = after.filter((e) => e.type === "message" && e.value?.role === "assistant")
    expect(replies.map((e) => e.key)).toEqual([reply.key])
    const runs = after.filter((e) => e.type === "run").map((e) => e.value as { id: string; trigger: string; status: string })
    expect(runs.map((r) => [r.trigger, r.status])).toEqual([[question, "finished"], [question, "finished"]])
    expect((replies[0]!.value as { runId: string }).runId).toBe(runs[1]!.id)
    expect(after.filter((e) => e.type === "control").map((e) => [e.key, e.value?.action, e.value?.runId])).toEqual([["c-ts-regen", "regenerate", runs[0]!.id]])

    // An edit of the question: its text replaced, and its reply written again in the same message.
    expect((await session.edit(question, "What is an offset, exactly?")).messageId).toBe(question)
    await expect(session.edit("m-missing", "x")).rejects.toMatchObject({ status: 409, code: "MESSAGE_NOT_FOUND" })
    const edited = await finishedRuns(3)
    expect(edited.filter((e) => e.type === "message").map((e) => [e.key, (e.value as { parts: { text: string }[] }).parts[0]!.text.length > 0])).toEqual([[question, true], [reply.key, true]])
    expect((edited.find((e) => e.key === question)!.value as { parts: { text: string }[] }).parts[0]!.text).toBe("What is an offset, exactly?")
    expect(posted).toEqual([])
  } finally {
    client.close()
    globalThis.fetch = native
  }
})

test("an edit of an earlier question takes the conversation after it out of a follower's state, live", async () => {
  const client = new DurableSessionsClient({ baseUrl: base!, participantId: "client:ts-edit" })
  const id = `ts-ws-edit-${Date.now()}`
  const session = client.session(id)
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 50_000)
  type Message = { id: string; role: string; parts: { text: string }[] }
  const messages = (s: SessionState) => s.all("message") as Message[]
  const runs = (s: SessionState) => s.all("run") as { status: string; trigger: string }[]
  const finished = (s: SessionState) => runs(s).filter((r) => r.status === "finished").length
  try {
    await session.create()
    const updates = session.join(abort.signal)
    // One follower throughout (a for-await that returns would end it).
    const until = async (done: (s: SessionState) => boolean) => {
      for (let next = await updates.next(); !next.done; next = await updates.next()) {
        if (next.value.upToDate && done(next.value.state)) return next.value.state
      }
      throw new Error("session ended")
    }
    const question = await session.sendMessage("What is an offset?")
    await until((s) => finished(s) === 1)
    await session.sendMessage("And a producer?")
    const before = await until((s) => finished(s) === 2)
    const reply = messages(before).find((m) => m.role === "assistant")!

    await session.edit(question, "What is an offset, exactly?")
    const after = await until((s) => finished(s) === 3)
    expect(messages(after).map((m) => m.id)).toEqual([question, reply.id])
    expect(messages(after)[0]!.parts[0]!.text).toBe("What is an offset, exactly?")
    expect(runs(after).at(-1)!.trigger).toBe(question)
  } finally {
    clearTimeout(timer)
    abort.abort()
    client.close()
  }
})

test("an operation the WebSocket never answers fails in time, and the sessions on that socket resume on a new one", async () => {
  const proxy = await silencingProxy(base!)
  const client = new DurableSessionsClient({ baseUrl: proxy.url, transport: "websocket", operationTimeoutMs: 1000, reconnectDelayMs: 5, maxReconnectDelayMs: 50 })
  const id = `ts-ws-silent-${Date.now()}`
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(), 50_000)
  try {
    await client.session(id).create()
    const { follower } = await followUntilRunFinished(client, id, abort.signal)
    const before = proxy.connections()

    // The socket goes silent: no answer and no close ever come on it.
    proxy.silence()
    const sent = Date.now()
    await expect(client.session(id).sendMessage("anyone there?")).rejects.toThrow(/did not answer the operation in time/)
    expect(Date.now() - sent).toBeLessThan(10_000)

    // The follower moved to a new socket: it sees what is written now.
    await write(id, "ws-silent-agent", 0, [change("run", "r1", "insert", { id: "r1", agent: "agent:ts", messageId: "m1", status: "started" })])
    await write(id, "ws-silent-agent", 1, [change("run", "r1", "update", { id: "r1", agent: "agent:ts", messageId: "m1", status: "finished" })])
    const state = await follower
    expect(state.get("run", "r1")?.status).toBe("finished")
    expect(proxy.connections()).toBeGreaterThan(before)
  } finally {
    clearTimeout(timer)
    abort.abort()
    client.close()
    proxy.close()
  }
})

test("a follower that sends nothing notices a silent socket by its keep-alive and resumes on a new one", async () => {
  // The page sends nothing: only its keep-alive can tell the socket went silent.
  // Noticed within about 750 ms, and a reconnect sent on a pooled connection of the dead link given up within 600 ms.
  await expectResumedAfterSilence(base!, { transport: "websocket", keepAliveMs: 300 }, "ts-ws-keepalive", 3_000, 20_000)
})

test("a keep-alive that setInterval cannot hold is refused", () => {
  for (const keepAliveMs of [0, -1, Number.NaN, 2 ** 31]) {
    expect(() => new DurableSessionsClient({ baseUrl: base!, keepAliveMs })).toThrow(/keepAliveMs/)
  }
})

test("an operation timeout that setTimeout cannot hold is refused", () => {
  for (const operationTimeoutMs of [0, -5, Number.NaN, 2 ** 31]) {
    expect(() => new DurableSessionsClient({ baseUrl: base!, operationTimeoutMs })).toThrow(/operationTimeoutMs/)
  }
  expect(() => new DurableSessionsClient({ baseUrl: base!, operationTimeoutMs: 2 ** 31 - 1 })).not.toThrow()
})
