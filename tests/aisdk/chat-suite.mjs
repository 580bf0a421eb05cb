// The unmodified AI SDK chat client (Chat from @ai-sdk/react, DefaultChatTransport from ai) against DurableSessions.
// Shared by the ai@6 (tests/aisdk) and ai@7 (tests/aisdk7) runs: each passes in its own AI SDK and vitest.
import { startServer } from "../server-process.mjs"

export function chatSuite({ afterAll, beforeAll, describe, expect, test }, { Chat, DefaultChatTransport, version, expectedMajor }) {
const base = process.env.AISDK_BASE_URL
if (!base) throw new Error("Set AISDK_BASE_URL to the server under test, e.g. http://127.0.0.1:4437")

const newChat = (id) => new Chat({ id, transport: new DefaultChatTransport({ api: `${base}/api/chat` }) })
const chatId = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`
const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("")

// The stored reply, as every durable-sessions client sees it.
async function storedReply(id, url = base) {
  const res = await fetch(`${url}/v1/sessions/${id}`)
  const snapshot = await res.json()
  const runs = snapshot.filter((m) => m.type === "run").map((m) => m.value)
  const run = runs[runs.length - 1]
  const message = snapshot.find((m) => m.type === "message" && m.key === run.messageId).value
  return { run, message, text: message.parts.filter((p) => p.type === "text").map((p) => p.text).join("") }
}

// After an edit of `question` to "What is a durable session?": the chat and the session hold the same two messages, the
// edited question and its one answer, written again by a new run in the message of the first answer.
async function expectAnsweredAgainInPlace(chat, id, question, first) {
  expect(chat.status).toBe("ready")
  expect(chat.error).toBeUndefined()
  const stored = await storedReply(id)
  expect(stored.run.id).not.toBe(first.run.id)
  expect(stored.run.trigger).toBe(question.id)
  expect(stored.run.status).toBe("finished")
  expect(stored.message.id).toBe(first.message.id)
  expect(chat.messages.map((m) => [m.role, m.id])).toEqual([["user", question.id], ["assistant", first.message.id]])
  expect(textOf(chat.messages[1])).toBe(stored.text)

  const snapshot = await (await fetch(`${base}/v1/sessions/${id}`)).json()
  const messages = snapshot.filter((m) => m.type === "message").map((m) => m.value)
  expect(messages.map((m) => m.id)).toEqual([question.id, first.message.id])
  expect(messages[0].parts[0].text).toBe("What is a durable session?")
  expect(messages[0].editedAt).toBeTruthy()
}

async function waitFor(predicate, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await predicate()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error("timed out")
}

describe("AI SDK useChat protocol", () => {
  test(`runs against ai@${expectedMajor}`, () => {
    expect(version.split(".")[0]).toBe(String(expectedMajor))
  })

  test("sends a message and receives the full reply", async () => {
    const id = chatId("send")
    const chat = newChat(id)
    await chat.sendMessage({ text: "What is a durable session?" })
    expect(chat.status).toBe("ready")
    expect(chat.error).toBeUndefined()
    const assistant = chat.messages.filter((m) => m.role === "assistant")
    expect(assistant).toHaveLength(1)
    const stored = await storedReply(id)
    expect(stored.run.status).toBe("finished")
    expect(assistant[0].id).toBe(stored.message.id)
    expect(textOf(assistant[0])).toBe(stored.text)
    expect(stored.text.length).toBeGreaterThan(20)
  })

  test("regenerate writes the reply again in place: one question, one answer, under the same message id", async () => {
    const id = chatId("regen")
    const chat = newChat(id)
    await chat.sendMessage({ text: "What is a durable session?" })
    const first = await storedReply(id)
    const runs = [first.run.id]

    // As useChat's regenerate button does (the latest reply), then naming the reply.
    for (const options of [undefined, { messageId: first.message.id }]) {
      await chat.regenerate(options)
      expect(chat.status).toBe("ready")
      expect(chat.error).toBeUndefined()
      const stored = await storedReply(id)
      expect(runs).not.toContain(stored.run.id)
      runs.push(stored.run.id)
      expect(stored.run.status).toBe("finished")
      expect(stored.message.id).toBe(first.message.id)
      expect(stored.message.runId).toBe(stored.run.id)
      expect(chat.messages.map((m) => m.role)).toEqual(["user", "assistant"])
      expect(chat.messages[1].id).toBe(first.message.id)
      expect(textOf(chat.messages[1])).toBe(stored.text)
      expect(stored.text.length).toBeGreaterThan(20)

      // The session holds the question once and one answer to it.
      const snapshot = await (await fetch(`${base}/v1/sessions/${id}`)).json()
      expect(snapshot.filter((m) => m.type === "message").map((m) => m.value.role)).toEqual(["user", "assistant"])
    }
  })

  test("the chat's message ids are the session's, and an edit answers the edited question again in place", async () => {
    const id = chatId("edit")
    const chat = newChat(id)
    await chat.sendMessage({ text: "Waht is a durable session?" })
    const first = await storedReply(id)
    const question = chat.messages[0]
    expect(first.run.trigger).toBe(question.id)

    // As useChat edits a message: sendMessage with the id of the message it replaces.
    await chat.sendMessage({ text: "What is a durable session?", messageId: question.id })
    await expectAnsweredAgainInPlace(chat, id, question, first)
  })

  test("an edit of an earlier message takes the turns after it out, as the chat does, and answers it again in place", async () => {
    const id = chatId("edit-earlier")
    const chat = newChat(id)
    await chat.sendMessage({ text: "Waht is a durable session?" })
    const first = await storedReply(id)
    const question = chat.messages[0]
    await chat.sendMessage({ text: "And what is a fence?" })
    expect(chat.messages.map((m) => m.role)).toEqual(["user", "assistant", "user", "assistant"])

    await chat.sendMessage({ text: "What is a durable session?", messageId: question.id })
    await expectAnsweredAgainInPlace(chat, id, question, first)
  })

  test("the same message sent again is answered with its reply, not asked twice", async () => {
    const id = chatId("twice")
    const body = JSON.stringify({ id, trigger: "submit-message", messages: [{ id: "u-once", role: "user", parts: [{ type: "text", text: "Only once, please" }] }] })
    const send = async () => {
      const res = await fetch(`${base}/api/chat`, { method: "POST", headers: { "content-type": "application/json" }, body })
      expect(res.status).toBe(200)
      const chunks = (await res.text()).split("\n").filter((l) => l.startsWith("data: {")).map((l) => JSON.parse(l.slice(6)))
      return { chunks, text: chunks.filter((c) => c.type === "text-delta").map((c) => c.delta).join("") }
    }
    const first = await send()
    const again = await send()
    const stored = await storedReply(id)
    for (const answer of [first, again]) {
      expect(answer.chunks[0]).toMatchObject({ type: "start", messageId: stored.message.id })
      expect(answer.chunks.at(-1).type).toBe("finish")
      expect(answer.text).toBe(stored.text)
    }
    const snapshot = await (await fetch(`${base}/v1/sessions/${id}`)).json()
    expect(snapshot.filter((m) => m.type === "message").map((m) => [m.value.role, m.value.role === "user" ? m.key : "reply"])).toEqual([["user", "u-once"], ["assistant", "reply"]])
    expect(snapshot.filter((m) => m.type === "run")).toHaveLength(1)
  })

  test("resuming with nothing streaming answers 204 and leaves the chat ready", async () => {
    const id = chatId("idle")
    const res = await fetch(`${base}/api/chat/${id}/stream`)
    expect(res.status).toBe(204)
    const chat = newChat(id)
    await chat.resumeStream()
    expect(chat.status).toBe("ready")
    expect(chat.messages).toHaveLength(0)
  })

  test("bad requests get a 4xx", async () => {
    for (const body of ["not json", "{}", JSON.stringify({ id: "x y", messages: [] }), JSON.stringify({ id: "ok", messages: [] })]) {
      const res = await fetch(`${base}/api/chat`, { method: "POST", headers: { "content-type": "application/json" }, body })
      expect(res.status).toBeGreaterThanOrEqual(400)
      expect(res.status).toBeLessThan(500)
    }
  })
})

// Replies written by the test itself, as an external agent writes them (plain Durable Streams appends with an
// idempotent producer), on a server of its own without the hosted agent, so the test decides how a reply goes.
describe("AI SDK useChat protocol with an external agent", () => {
  let server
  beforeAll(async () => { server = await startServer(["--no-agent"]) })
  afterAll(async () => { await server?.stop() })

  const chatAt = (id) => new Chat({ id, transport: new DefaultChatTransport({ api: `${server.url}/api/chat` }) })
  const change = (type, key, operation, value) => ({ type, key, value, headers: { operation } })

  /**
   * An agent answering the session's user message; every write is retried with the same sequence number until
   * acknowledged. Given a cut run, it takes that run over as the agent host does: the cut run is marked interrupted and
   * superseded, and the new run answers the same message again from empty.
   */
  async function agentFor(id, cut) {
    let trigger
    await waitFor(async () => {
      const snapshot = await (await fetch(`${server.url}/v1/sessions/${id}`).catch(() => ({ ok: false }))).json?.().catch(() => []) ?? []
      trigger = Array.isArray(snapshot) ? snapshot.find((m) => m.type === "message" && m.value.role === "user")?.key : undefined
      return trigger !== undefined
    })
    const producer = `agent-test-${Math.random().toString(36).slice(2)}`
    let seq = 0
    let text = ""
    const run = { id: `r-${producer}`, agent: "agent:test", messageId: cut?.messageId ?? `m-${producer}`, trigger }
    const deltaKey = () => (cut ? `${run.messageId}:${run.id}:${text.length}` : `${run.messageId}:${text.length}`)
    const write = async (events) => {
      const body = JSON.stringify(events)
      const headers = { "content-type": "application/json", "producer-id": producer, "producer-epoch": "0", "producer-seq": String(seq++) }
      const deadline = Date.now() + 30_000
      for (;;) {
        const response = await fetch(`${server.url}/v1/stream/sessions/${id}`, { method: "POST", headers, body }).catch(() => undefined)
        if (response?.ok) return
        if (response && response.status < 500) throw new Error(`append answered ${response.status}: ${await response.text()}`)
        if (Date.now() > deadline) throw new Error("the server did not come back")
        await new Promise((r) => setTimeout(r, 50)) // server down: the same request again (the producer sequence dedupes)
      }
    }
    return {
      text: () => text,
      start: () => write(cut
        ? [
            change("run", cut.id, "update", { ...cut, status: "interrupted", supersededBy: run.id }),
            change("run", run.id, "insert", { ...run, status: "started" }),
            change("message", run.messageId, "update", { id: run.messageId, role: "assistant", runId: run.id, parts: [], status: "streaming" }),
          ]
        : [
            change("run", run.id, "insert", { ...run, status: "started" }),
            change("message", run.messageId, "insert", { id: run.messageId, role: "assistant", runId: run.id, parts: [], status: "streaming" }),
          ]),
      /** Another agent taking this run over, as after this one's crash. */
      takeOver: () => agentFor(id, { ...run, status: "started" }),
      async tokens(count, pauseMs) {
        for (let i = 0; i < count; i++) {
          const token = `word${text.length} `
          text += token
          await write([change("delta", deltaKey(), "insert", { messageId: run.messageId, part: 0, text: token })])
          await new Promise((r) => setTimeout(r, pauseMs))
        }
      },
      finish: () => write([
        change("message", run.messageId, "update", { id: run.messageId, role: "assistant", runId: run.id, parts: [{ type: "text", text }], status: "complete" }),
        change("run", run.id, "update", { ...run, status: "finished", finishReason: "stop" }),
      ]),
      fail: (error) => write([
        change("message", run.messageId, "update", { id: run.messageId, role: "assistant", runId: run.id, parts: [{ type: "text", text }], status: "failed" }),
        change("run", run.id, "update", { ...run, status: "failed", error }),
      ]),
    }
  }

  /** A chat whose question the test's agent is answering: five tokens in, shown by the chat, and still streaming. */
  async function replyStreaming(name, question) {
    const id = chatId(name)
    const chat = chatAt(id)
    const sending = chat.sendMessage({ text: question })
    const agent = await agentFor(id)
    await agent.start()
    await agent.tokens(5, 10)
    await waitFor(async () => chat.messages.some((m) => m.role === "assistant" && textOf(m).length > 0))
    return { id, chat, sending, agent }
  }

  /**
   * `resumed` resumes chat `id` while the agent writes `tokens` more tokens and finishes: it ends ready, with one
   * assistant message, the stored one, holding the agent's whole text once.
   */
  async function resumeToTheEnd(resumed, id, agent, tokens) {
    const resuming = resumed.resumeStream()
    // The resumed stream shows the first token, however late it connects: then the rest is written while it follows.
    await agent.tokens(1, 0)
    await waitFor(async () => resumed.status === "streaming")
    await agent.tokens(tokens - 1, 10)
    await agent.finish()
    await resuming
    expect(resumed.status).toBe("ready")
    expect(resumed.error).toBeUndefined()
    const assistant = resumed.messages.filter((m) => m.role === "assistant")
    expect(assistant).toHaveLength(1)
    const stored = await storedReply(id, server.url)
    expect(stored.run.status).toBe("finished")
    expect(assistant[0].id).toBe(stored.message.id)
    expect(textOf(assistant[0])).toBe(agent.text())
  }

  // The replies below are written by the test, so each is still streaming when the client stops, resumes or cancels it.
  test("a reply aborted by the client is resumed by a new Chat exactly once", async () => {
    const { id, chat: first, sending, agent } = await replyStreaming("resume", "Tell me about offsets")
    await first.stop() // aborts the fetch only; the reply keeps streaming on the server
    await sending.catch(() => {})

    await resumeToTheEnd(chatAt(id), id, agent, 10)
    expect(agent.text().split(" ").filter(Boolean)).toHaveLength(15)
  })

  test("a reply taken over by another run ends the chat with an error, and resuming it replaces the cut text with the new answer", async () => {
    const { id, chat, sending, agent } = await replyStreaming("takeover", "Tell me about leases")
    const next = await agent.takeOver()
    await next.start() // the cut run interrupted and superseded, the message started again from empty
    await sending.catch(() => {})
    expect(chat.status).toBe("error")
    expect(chat.error?.message).toContain("answered again")

    // The same Chat resumes: the resumed stream is a replay, which takes the place of the cut text under the same message id.
    await resumeToTheEnd(chat, id, next, 10)
    expect(next.text().split(" ").filter(Boolean)).toHaveLength(10)
  })

  test("the stop endpoint cancels the run, fences the agent's next write, and a later resume gets 204", async () => {
    const { id, chat, sending, agent } = await replyStreaming("stop", "Write a long answer")
    const stop = await fetch(`${server.url}/api/chat/${id}/stop`, { method: "POST" })
    expect(stop.status).toBe(200)
    await sending
    expect(chat.status).toBe("ready")
    expect((await storedReply(id, server.url)).run.status).toBe("cancelled")
    await expect(agent.tokens(1, 0)).rejects.toThrow(/append answered 409/)
    expect((await fetch(`${server.url}/api/chat/${id}/stream`)).status).toBe(204)
  })

  /**
   * A POST /api/chat of one user message with the chat's own id for it. `responded` resolves once the response has
   * begun (the server has chosen what the stream follows), `started` once its stream has sent its `start` chunk;
   * `read()` gives the stream's chunks once it ends.
   */
  function sendRaw(id, messageId, text) {
    const body = JSON.stringify({ id, trigger: "submit-message", messages: [{ id: messageId, role: "user", parts: [{ type: "text", text }] }] })
    let onStart
    const started = new Promise((resolve) => { onStart = resolve })
    const responded = fetch(`${server.url}/api/chat`, { method: "POST", headers: { "content-type": "application/json" }, body })
    const done = (async () => {
      const res = await responded
      expect(res.status).toBe(200)
      const decoder = new TextDecoder()
      let all = ""
      for await (const bytes of res.body) {
        all += decoder.decode(bytes, { stream: true })
        if (all.includes('"type":"start"')) onStart()
      }
      const chunks = all.split("\n").filter((l) => l.startsWith("data: {")).map((l) => JSON.parse(l.slice(6)))
      return { chunks, text: chunks.filter((c) => c.type === "text-delta").map((c) => c.delta).join("") }
    })()
    return { responded, started, read: () => done }
  }

  test("the same message sent again while its reply is written gets that reply from its start, and once it has ended, whole", async () => {
    const id = chatId("again-streaming")
    const first = sendRaw(id, "u-again", "Only once")
    const agent = await agentFor(id)
    await agent.start()
    await agent.tokens(3, 5)
    // Sent again while the reply is written: its stream starts (replaying what is written so far), then the rest comes.
    const during = sendRaw(id, "u-again", "Only once")
    await during.started
    await agent.tokens(2, 5)
    await agent.finish()
    const after = sendRaw(id, "u-again", "Only once")

    const stored = await storedReply(id, server.url)
    for (const answer of await Promise.all([first.read(), during.read(), after.read()])) {
      expect(answer.chunks[0]).toMatchObject({ type: "start", messageId: stored.message.id })
      expect(answer.chunks.at(-1).type).toBe("finish")
      expect(answer.text).toBe(agent.text())
    }
    const snapshot = await (await fetch(`${server.url}/v1/sessions/${id}`)).json()
    expect(snapshot.filter((m) => m.type === "message" && m.value.role === "user").map((m) => m.key)).toEqual(["u-again"])
    expect(snapshot.filter((m) => m.type === "run")).toHaveLength(1)
  })

  test("a message sent again after its reply was asked to be written again gets the new reply, not the old one", async () => {
    const id = chatId("again-regenerate")
    const first = sendRaw(id, "u-regen", "Once more")
    const agent = await agentFor(id)
    await agent.start()
    await agent.tokens(3, 5)
    await agent.finish()
    await first.read()
    const stored = await storedReply(id, server.url)
    const asked = await fetch(`${server.url}/v1/sessions/${id}/messages/${stored.message.id}/regenerate`, { method: "POST", headers: { "content-type": "application/json" }, body: "{}" })
    expect(asked.status).toBe(200)

    // Sent again while the reply waits to be written again: the stream follows the run still to come.
    const again = sendRaw(id, "u-regen", "Once more")
    await again.responded
    const next = await agent.takeOver() // the new run writes the same message, from empty
    await next.start()
    await next.tokens(4, 5)
    await next.finish()
    const answer = await again.read()
    expect(answer.chunks[0]).toMatchObject({ type: "start", messageId: stored.message.id })
    expect(answer.chunks.at(-1).type).toBe("finish")
    expect(answer.text).toBe(next.text())
    expect(answer.text).not.toBe(agent.text())
  })

  test("a message routed to a human, sent again, gets the human's answer, or at once an error once control was handed back", async () => {
    const id = chatId("again-human")
    const json = (method, path, body) => fetch(`${server.url}/v1/sessions/${id}${path}`, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
    expect((await json("PUT", "", {})).status).toBe(201)
    expect((await json("POST", "/handoff", { holder: "human:bob" })).status).toBe(200)

    const answered = sendRaw(id, "u-bob", "Are you a person?")
    await waitFor(async () => (await fetch(`${server.url}/v1/sessions/${id}`).then((r) => r.json())).some((m) => m.key === "u-bob"))
    expect((await json("POST", "/messages", { text: "Yes, Bob here.", role: "assistant", author: "human:bob" })).status).toBe(201)
    for (const answer of [await answered.read(), await sendRaw(id, "u-bob", "Are you a person?").read()]) {
      expect(answer.text).toBe("Yes, Bob here.")
      expect(answer.chunks.at(-1).type).toBe("finish")
    }

    const unanswered = sendRaw(id, "u-later", "Still there?")
    await waitFor(async () => (await fetch(`${server.url}/v1/sessions/${id}`).then((r) => r.json())).some((m) => m.key === "u-later"))
    expect((await json("DELETE", "/handoff", { holder: "human:bob" })).status).toBe(200)
    for (const answer of [await unanswered.read(), await sendRaw(id, "u-later", "Still there?").read()]) {
      expect(answer.chunks.at(-1)).toMatchObject({ type: "error" })
      expect(answer.chunks.at(-1).errorText).toContain("handed back")
    }
  })

  test("an agent error surfaces as status error", async () => {
    const id = chatId("agent-error")
    const chat = chatAt(id)
    const sending = chat.sendMessage({ text: "Ask the broken model" })
    const agent = await agentFor(id)
    await agent.start()
    await agent.tokens(5, 10)
    await agent.fail("The model provider is unavailable.")
    await sending.catch(() => {})
    expect(chat.status).toBe("error")
    expect(chat.error?.message).toContain("The model provider is unavailable.")
  })

  test("a server restart mid-reply followed by resume still completes the reply", async () => {
    const id = chatId("restart")
    const chat = chatAt(id)
    const sending = chat.sendMessage({ text: "Keep going through a restart" })
    const agent = await agentFor(id)
    await agent.start()
    await agent.tokens(20, 15)
    await waitFor(async () => chat.messages.some((m) => m.role === "assistant" && textOf(m).length > 0))

    await server.kill() // kill -9, in the middle of the reply
    const writing = agent.tokens(40, 25) // the agent keeps going; its writes retry until the server is back
    await server.restart()
    await sending.catch(() => {})
    expect(chat.status).toBe("error") // the first stream was cut

    const resumed = chatAt(id)
    const resuming = resumed.resumeStream() // while the reply is still streaming
    await writing
    await agent.finish()
    await resuming
    expect(resumed.status).toBe("ready")
    expect(resumed.error).toBeUndefined()
    const assistant = resumed.messages.filter((m) => m.role === "assistant")
    expect(assistant).toHaveLength(1)
    expect(agent.text().split(" ").filter(Boolean)).toHaveLength(60)
    expect(textOf(assistant[0])).toBe(agent.text())
  })
})
}
