// The unmodified AI SDK chat client (Chat from @ai-sdk/react, DefaultChatTransport from ai) against DurableSessions.
// Shared by the ai@6 (tests/aisdk) and ai@7 (tests/aisdk7) runs: each passes in its own AI SDK and vitest.
export function chatSuite({ describe, expect, test }, { Chat, DefaultChatTransport, version, expectedMajor }) {
const base = process.env.AISDK_BASE_URL
if (!base) throw new Error("Set AISDK_BASE_URL to the server under test, e.g. http://127.0.0.1:4437")

const newChat = (id) => new Chat({ id, transport: new DefaultChatTransport({ api: `${base}/api/chat` }) })
const chatId = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}`
const textOf = (message) => message.parts.filter((p) => p.type === "text").map((p) => p.text).join("")

// The stored reply, as every durable-sessions client sees it.
async function storedReply(id) {
  const res = await fetch(`${base}/v1/sessions/${id}`)
  const snapshot = await res.json()
  const runs = snapshot.filter((m) => m.type === "run").map((m) => m.value)
  const run = runs[runs.length - 1]
  const message = snapshot.find((m) => m.type === "message" && m.key === run.messageId).value
  return { run, message, text: message.parts.filter((p) => p.type === "text").map((p) => p.text).join("") }
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

  test("a reply aborted by the client is resumed by a new Chat exactly once", async () => {
    const id = chatId("resume")
    const first = newChat(id)
    const sending = first.sendMessage({ text: "Tell me about offsets" })
    await waitFor(async () => first.messages.some((m) => m.role === "assistant" && textOf(m).length > 0))
    await first.stop() // aborts the fetch only; the reply keeps streaming on the server
    await sending.catch(() => {})

    const second = newChat(id)
    await second.resumeStream()
    expect(second.status).toBe("ready")
    const assistant = second.messages.filter((m) => m.role === "assistant")
    expect(assistant).toHaveLength(1)
    await waitFor(async () => (await storedReply(id)).run.status === "finished")
    const stored = await storedReply(id)
    expect(assistant[0].id).toBe(stored.message.id)
    expect(textOf(assistant[0])).toBe(stored.text)
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

  test("the stop endpoint cancels the run and a later resume gets 204", async () => {
    const id = chatId("stop")
    const chat = newChat(id)
    const sending = chat.sendMessage({ text: "Write a long answer" })
    await waitFor(async () => chat.messages.some((m) => m.role === "assistant" && textOf(m).length > 0))
    const stop = await fetch(`${base}/api/chat/${id}/stop`, { method: "POST" })
    expect(stop.status).toBe(200)
    await sending
    expect(chat.status).toBe("ready")
    expect((await storedReply(id)).run.status).toBe("cancelled")
    expect((await fetch(`${base}/api/chat/${id}/stream`)).status).toBe(204)
  })

  test("bad requests get a 4xx", async () => {
    for (const body of ["not json", "{}", JSON.stringify({ id: "x y", messages: [] }), JSON.stringify({ id: "ok", messages: [] })]) {
      const res = await fetch(`${base}/api/chat`, { method: "POST", headers: { "content-type": "application/json" }, body })
      expect(res.status).toBeGreaterThanOrEqual(400)
      expect(res.status).toBeLessThan(500)
    }
  })
})
}
