// The demo page in headless Chromium against a real server with the hosted demo agent: reload mid-reply, two tabs,
// Stop from another tab, going offline mid-reply, and a screenshot.
import { mkdirSync } from "node:fs"
import { createConnection, createServer } from "node:net"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { chromium } from "playwright-core"
import { afterAll, beforeAll, expect, test } from "vitest"
import { startServer } from "../server-process.mjs"

const artifacts = join(dirname(fileURLToPath(import.meta.url)), "artifacts")
let server
let browser

beforeAll(async () => {
  // 10 tokens/s makes a demo reply last 5-10 s: long enough to act in the middle of it on a loaded machine.
  server = await startServer(["--Agent:TokensPerSecond=10"])
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  })
})

afterAll(async () => {
  await browser?.close()
  await server?.stop()
})

const sessionId = (name) => `${name}-${Date.now().toString(36)}`

/** A fresh browser profile (its own storage), like another device. */
async function device() {
  return browser.newContext({ viewport: { width: 1100, height: 720 } })
}

async function openPage(context, url) {
  const page = await context.newPage()
  await page.goto(url)
  await page.locator("#connection.live").waitFor({ timeout: 15_000 })
  return page
}

async function send(page, text) {
  await page.locator("#input").fill(text)
  await page.locator("#send").click()
}

const assistantTexts = (page) => page.locator("#conversation .message.assistant .text").allTextContents()
const messageTexts = (page) => page.locator("#conversation .message .text").allTextContents()

/** The last run and its reply as stored by the server. */
async function stored(id) {
  const snapshot = await (await fetch(`${server.url}/v1/sessions/${id}`)).json()
  const runs = snapshot.filter((m) => m.type === "run").map((m) => m.value)
  const run = runs.at(-1)
  const message = run && snapshot.find((m) => m.type === "message" && m.key === run.messageId)?.value
  return { run, text: message ? message.parts.filter((p) => p.type === "text").map((p) => p.text).join("") : "" }
}

async function until(predicate, timeoutMs = 20_000, what = "condition") {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    try {
      if (await predicate()) return
    } catch (error) {
      // A page in the middle of a navigation has no state to look at yet: look again once it has loaded.
      if (!/Execution context was destroyed|navigation/i.test(String(error?.message))) throw error
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`timed out waiting for ${what}`)
}

const replyStreaming = async (page, minLength = 1) =>
  (await page.locator("#conversation .message.assistant.streaming .text").allTextContents()).some((t) => t.length >= minLength)

test("a reload in the middle of a reply shows the full reply exactly once, resumed from the stored offset", async () => {
  const id = sessionId("reload")
  const context = await device()
  const page = await openPage(context, `${server.url}/#${id}`)
  await send(page, "What happens when I reload the page?")
  await until(() => replyStreaming(page, 30), 20_000, "the reply to start streaming")

  const requests = []
  page.on("request", (r) => requests.push(Object.assign(new URL(r.url()), { method: r.method() })))
  // The page follows its sessions over one WebSocket: what it subscribes from is in the frames it sends.
  const subscribed = []
  page.on("websocket", (socket) => socket.on("framesent", (frame) => {
    const message = JSON.parse(String(frame.payload))
    if (message.op === "subscribe") subscribed.push(message)
  }))
  await page.reload()
  // Right after the reload the page already shows the part of the reply it had, from the stored state.
  await page.locator("#conversation .message.assistant .text").first().waitFor()
  expect((await assistantTexts(page))[0].length).toBeGreaterThan(0)

  await until(async () => (await stored(id)).run?.status === "finished", 30_000, "the run to finish")
  const { text } = await stored(id)
  await until(async () => (await assistantTexts(page)).join("") === text, 10_000, "the page to show the stored reply")
  expect(await assistantTexts(page)).toEqual([text])
  expect(await page.locator("#conversation .message.user").count()).toBe(1)

  // The reloaded page did not hydrate from the snapshot: it resumed the stream at the offset it had stored.
  expect(requests.some((u) => u.method === "GET" && u.pathname === `/v1/sessions/${id}`)).toBe(false)
  expect(requests.some((u) => u.pathname === `/v1/stream/sessions/${id}`)).toBe(false)
  const firstRead = subscribed.find((m) => m.path === `sessions/${id}`)
  expect(firstRead.offset).toMatch(/^\d+_\d+$/)
  expect(firstRead.offset).not.toBe("-1")
  await context.close()
})

test("two tabs on one session stay identical while a reply streams", async () => {
  const id = sessionId("tabs")
  const context = await device()
  const a = await openPage(context, `${server.url}/#${id}`)
  const b = await openPage(context, `${server.url}/#${id}`)
  await send(a, "Are my two tabs in step?")
  await until(() => replyStreaming(b), 20_000, "the reply to reach tab B")
  await until(() => replyStreaming(a), 20_000, "the reply to reach tab A")

  // While it streams, one tab may be a few milliseconds ahead of the other, never different.
  let midReplySamples = 0
  while ((await stored(id)).run?.status === "started") {
    // The texts of the messages, in order: the same messages, the streaming one a prefix of the other tab's.
    const [ta, tb] = await Promise.all([messageTexts(a), messageTexts(b)])
    expect(ta.length, `tab A: ${ta}\ntab B: ${tb}`).toBe(tb.length)
    ta.forEach((text, i) => expect(text.startsWith(tb[i]) || tb[i].startsWith(text), `message ${i}: "${text}" vs "${tb[i]}"`).toBe(true))
    midReplySamples++
    await new Promise((r) => setTimeout(r, 100))
  }
  expect(midReplySamples).toBeGreaterThan(5)
  const { text } = await stored(id)
  await until(async () => (await assistantTexts(a)).join("") === text && (await assistantTexts(b)).join("") === text, 10_000, "both tabs to finish")
  // The same messages, with the same status lines (the asking tab alone has an Edit button on its question).
  const shown = (page) => page.locator("#conversation .message").evaluateAll((all) => all.map((m) => [m.className, m.querySelector(".text")?.textContent, m.querySelector(".meta")?.textContent ?? null]))
  expect(await shown(a)).toEqual(await shown(b))
  expect(await a.locator("#conversation .edit").count()).toBe(1)
  expect(await b.locator("#conversation .edit").count()).toBe(0)

  // Each tab sees both tabs (and the agent) as present.
  for (const page of [a, b]) {
    await until(async () => (await page.locator("#presence li.client").count()) === 2, 10_000, "both tabs in the presence list")
    expect(await page.locator("#presence li", { hasText: "(you)" }).count()).toBe(1)
    expect(await page.locator("#presence li.agent").count()).toBeGreaterThan(0)
  }
  await context.close()
})

test("Answer again in one tab writes the reply again in place, and both tabs show one question and its new answer", async () => {
  const id = sessionId("again")
  const context = await device()
  const a = await openPage(context, `${server.url}/#${id}`)
  const b = await openPage(context, `${server.url}/#${id}`)
  await send(a, "Say it once more")
  await b.locator("#conversation .again").waitFor({ timeout: 30_000 })
  const first = await stored(id)
  expect(first.run.status).toBe("finished")

  await b.locator("#conversation .again").click()
  await until(async () => {
    const now = await stored(id)
    return now.run.id !== first.run.id && now.run.status === "finished"
  }, 30_000, "the reply to be written again")
  const { text } = await stored(id)
  for (const page of [a, b]) {
    await until(async () => (await assistantTexts(page)).join("") === text && (await page.locator("#conversation .again").count()) === 1, 10_000, "the new answer in both tabs")
    expect(await page.locator("#conversation .message.assistant").count()).toBe(1)
    expect(await page.locator("#conversation .message.user").count()).toBe(1)
  }
  await context.close()
})

test("Edit on an earlier question in one tab takes the conversation after it out, and both tabs show it answered anew", async () => {
  const id = sessionId("edit")
  const context = await device()
  const a = await openPage(context, `${server.url}/#${id}`)
  const b = await openPage(context, `${server.url}/#${id}`)
  await send(a, "Waht is a fence?")
  await until(async () => (await stored(id)).run?.status === "finished", 30_000, "the first answer")
  const first = await stored(id)
  await send(a, "And a lease?")
  await until(async () => (await stored(id)).run?.id !== first.run.id, 30_000, "the second question's run")

  // Only the tab that asked can edit its questions.
  await until(async () => (await a.locator("#conversation .message.user .edit").count()) === 2, 10_000, "both questions editable in tab A")
  expect(await b.locator("#conversation .edit").count()).toBe(0)

  await a.locator("#conversation .message.user .edit").first().click()
  expect(await a.locator("#input").inputValue()).toBe("Waht is a fence?")
  await send(a, "What is a fence?")
  await until(async () => {
    const now = await stored(id)
    return now.run.trigger === first.run.trigger && now.run.id !== first.run.id && now.run.status === "finished"
  }, 30_000, "the edited question to be answered again")
  const { text } = await stored(id)
  for (const page of [a, b]) {
    await until(async () => (await messageTexts(page)).join("|") === `What is a fence?|${text}`, 10_000, "one question and its new answer in both tabs")
  }
  expect(await a.locator("#editing").isHidden()).toBe(true)

  // Once another tab has asked after it, the question is not tab A's alone to take back: the edit is refused, and the
  // text stays in the composer with the reason.
  await send(b, "A question from tab B")
  await until(async () => (await messageTexts(a)).includes("A question from tab B"), 10_000, "tab B's question in tab A")
  await a.locator("#conversation .message.user .edit").first().click()
  await send(a, "What is a fence, really?")
  await a.locator("#edit-problem", { hasText: "only a message with nobody else's after it can be edited" }).waitFor({ timeout: 10_000 })
  expect(await a.locator("#input").inputValue()).toBe("What is a fence, really?")
  expect((await messageTexts(a))[0]).toBe("What is a fence?")
  await context.close()
})

test("Stop pressed in tab B stops the reply tab A started within a second, and both show it cancelled", async () => {
  const id = sessionId("stop")
  const context = await device()
  const a = await openPage(context, `${server.url}/#${id}`)
  const b = await openPage(context, `${server.url}/#${id}`)
  await send(a, "Please write a long answer.")
  await b.locator("#stop").waitFor({ state: "visible", timeout: 20_000 })
  await until(() => replyStreaming(b, 20), 20_000, "the reply to stream in tab B")

  const pressed = Date.now()
  await b.locator("#stop").click()
  await Promise.all([a, b].map((page) => page.locator("#conversation .message.assistant.cancelled").waitFor({ timeout: 5_000 })))
  const elapsed = Date.now() - pressed
  expect(elapsed).toBeLessThan(1_000)

  const { run, text } = await stored(id)
  expect(run.status).toBe("cancelled")
  for (const page of [a, b]) {
    expect(await page.locator("#conversation .message.assistant .meta").innerText()).toBe("cancelled")
    await expect.poll(() => page.locator("#stop").isHidden()).toBe(true)
  }
  // Nothing more arrives after the stop: the text stays what it was when the run was cancelled.
  await new Promise((r) => setTimeout(r, 700))
  expect((await stored(id)).text).toBe(text)
  expect((await assistantTexts(a)).join("")).toBe(text)
  expect((await assistantTexts(b)).join("")).toBe(text)
  console.log(`stop pressed in tab B → both tabs show cancelled: ${elapsed} ms`)
  await context.close()
})

/** A TCP proxy in front of the server whose "network" can be pulled: every connection is cut and new ones refused. */
function networkProxy(port) {
  const sockets = new Set()
  let online = true
  const proxy = createServer((client) => {
    if (!online) return client.destroy()
    const upstream = createConnection({ host: "127.0.0.1", port })
    sockets.add(client).add(upstream)
    client.pipe(upstream).pipe(client)
    const close = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
    client.on("error", close).on("close", close)
    upstream.on("error", close).on("close", close)
  })
  return new Promise((resolve) => proxy.listen(0, "127.0.0.1", () => resolve({
    url: `http://127.0.0.1:${proxy.address().port}`,
    offline() { online = false; for (const s of sockets) s.destroy() },
    online() { online = true },
    close() { for (const s of sockets) s.destroy(); proxy.close() },
  })))
}

test("going offline mid-reply and back online completes the reply with no gap or duplicate", async () => {
  const id = sessionId("offline")
  const network = await networkProxy(server.port)
  const context = await device()
  const page = await openPage(context, `${network.url}/#${id}`)
  await send(page, "What if my network drops?")
  await until(() => replyStreaming(page, 20), 20_000, "the reply to start streaming")

  await context.setOffline(true)
  network.offline()
  await page.locator("#connection.reconnecting").waitFor({ timeout: 5_000 })
  const shownWhenOffline = (await assistantTexts(page)).join("")
  await new Promise((r) => setTimeout(r, 1_500))
  // The page really was cut off: the agent went on writing, the page did not see it.
  expect((await assistantTexts(page)).join("")).toBe(shownWhenOffline)
  expect((await stored(id)).text.length).toBeGreaterThan(shownWhenOffline.length)

  network.online()
  await context.setOffline(false)
  await page.locator("#connection.live").waitFor({ timeout: 10_000 })
  await until(async () => (await stored(id)).run?.status === "finished", 30_000, "the run to finish")
  const { text } = await stored(id)
  await until(async () => (await assistantTexts(page)).join("") === text, 10_000, "the page to show the stored reply")
  expect(await assistantTexts(page)).toEqual([text])
  expect(text.startsWith(shownWhenOffline)).toBe(true)
  await context.close()
  network.close()
})

test("one page follows twelve sessions live over one WebSocket and shows each one's state as it changes", async () => {
  const ids = Array.from({ length: 12 }, (_, i) => sessionId(`list${i}`))
  for (const id of ids) expect((await fetch(`${server.url}/v1/sessions/${id}`, { method: "PUT" })).status).toBe(201)
  const context = await device()
  // This browser opened these twelve conversations before.
  await context.addInitScript((recent) => {
    if (!localStorage.getItem("durable-sessions:recent")) localStorage.setItem("durable-sessions:recent", JSON.stringify(recent))
  }, ids)
  const page = await context.newPage()
  const sockets = []
  const streamReads = []
  page.on("websocket", (socket) => sockets.push(socket.url()))
  page.on("request", (r) => { if (new URL(r.url()).pathname.startsWith("/v1/stream/")) streamReads.push(r.url()) })
  await page.goto(`${server.url}/#${ids[0]}`)
  await page.locator("#connection.live").waitFor({ timeout: 15_000 })
  await until(async () => (await page.locator("#conversations li").count()) === 12, 15_000, "twelve conversations listed")
  // Every state each entry shows, as the page draws it.
  await page.evaluate(() => {
    window.seen = {}
    const record = () => {
      for (const li of document.querySelectorAll("#conversations li")) (window.seen[li.dataset.session] ??= []).push(li.dataset.status)
    }
    new MutationObserver(record).observe(document.getElementById("conversations"), { childList: true, subtree: true })
    record()
  })

  // Another device asks a question in each conversation; the hosted agent answers all twelve at once.
  for (const [i, id] of ids.entries()) {
    const response = await fetch(`${server.url}/v1/sessions/${id}/messages`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: `Question ${i}`, author: "client:phone" }),
    })
    expect(response.status).toBe(201)
  }
  const shown = async () => page.locator("#conversations li").evaluateAll((items) => Object.fromEntries(items.map((li) => [li.dataset.session, li.dataset.status])))
  const cancelled = ids[5]
  await until(async () => { const { run, text } = await stored(cancelled); return run?.status === "started" && text.length > 10 }, 20_000, "a reply to start")
  // The reply is cancelled once the page shows it streaming: on a loaded machine the page may take a moment longer
  // than the store, and a cancel in that moment would reach it together with the reply's start.
  await until(async () => (await shown())[cancelled] === "streaming", 20_000, "the page to show that reply streaming")
  const { run } = await stored(cancelled)
  const cancel = await fetch(`${server.url}/v1/sessions/${cancelled}/runs/${run.id}/cancel`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ by: "client:phone" }),
  })
  expect(cancel.status).toBe(200)

  const expected = async () => Promise.all(ids.map(async (id) => {
    const status = (await stored(id)).run?.status
    return status === "finished" ? "done" : status
  }))
  await until(async () => (await expected()).every((s) => s === "done" || s === "cancelled"), 60_000, "every reply to end")
  const final = await expected()
  expect(final[5]).toBe("cancelled")
  expect(final.filter((s) => s === "done").length).toBe(11)
  await until(async () => { const s = await shown(); return ids.every((id, i) => s[id] === final[i]) }, 10_000, "the list to show how each reply ended")

  const seen = await page.evaluate(() => window.seen)
  for (const id of ids) expect(seen[id], `${id} was shown streaming`).toContain("streaming")
  const titles = await page.locator("#conversations li .title").allTextContents()
  expect(new Set(titles)).toEqual(new Set(ids.map((_, i) => `Question ${i}`)))
  expect(await page.locator("#conversations li.current").getAttribute("data-session")).toBe(ids[0])
  // All of it over one connection: one WebSocket, and no SSE or long-poll read that would hold one of the browser's six
  // HTTP/1.1 connections per origin.
  expect(sockets).toEqual([`${server.url.replace("http", "ws")}/v1/ws`])
  expect(streamReads).toEqual([])

  // Choosing a conversation opens it.
  await page.locator(`#conversations li[data-session="${ids[7]}"] a`).click()
  await until(async () => (await messageTexts(page)).includes("Question 7"), 15_000, "the chosen conversation to open")
  await context.close()
})

/** Creates a session and asks it a question as another device; returns its id. */
async function ask(name, text) {
  const id = sessionId(name)
  expect((await fetch(`${server.url}/v1/sessions/${id}`, { method: "PUT" })).status).toBe(201)
  const response = await fetch(`${server.url}/v1/sessions/${id}/messages`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text, author: "client:phone" }),
  })
  expect(response.status).toBe(201)
  return id
}

test("a screenshot of the demo page", async () => {
  const id = sessionId("demo")
  // Two conversations from before: one answered, one stopped mid-reply.
  const earlier = [await ask("earlier", "How do offsets work?"), await ask("stopped", "Write me a long story")]
  await until(async () => (await stored(earlier[1])).text.length > 10, 20_000, "the earlier reply to start")
  const stop = await fetch(`${server.url}/v1/sessions/${earlier[1]}/runs/${(await stored(earlier[1])).run.id}/cancel`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ by: "client:phone" }),
  })
  expect(stop.status).toBe(200)
  const context = await device()
  await context.addInitScript((recent) => {
    if (!localStorage.getItem("durable-sessions:recent")) localStorage.setItem("durable-sessions:recent", JSON.stringify(recent))
  }, earlier)
  const page = await openPage(context, `${server.url}/#${id}`)
  const phone = await device()
  const other = await openPage(phone, `${server.url}/#${id}`)
  await send(page, "What is a durable session?")
  await until(async () => (await stored(id)).run?.status === "finished", 30_000, "the first reply")
  await send(other, "Can I follow it from my phone?")
  await until(async () => (await stored(id)).run?.status === "started" && (await stored(id)).text.length > 60, 30_000, "the second reply")
  await until(() => replyStreaming(page, 60), 10_000, "the second reply on the page")
  await until(async () => (await page.locator("#conversations li[data-status=done]").count()) === 1, 10_000, "the earlier conversation done")
  await until(async () => (await page.locator("#presence li.client").count()) === 2, 10_000, "both devices in the presence list")

  mkdirSync(artifacts, { recursive: true })
  const png = await page.screenshot({ path: join(artifacts, "demo-page.png") })
  expect(png.subarray(1, 4).toString()).toBe("PNG")
  expect(png.length).toBeGreaterThan(20_000)
  expect(await page.locator("#stop").isVisible()).toBe(true)
  expect(await page.locator("#conversation .message").count()).toBe(4)
  expect(await page.locator("#presence li.client").count()).toBe(2)
  expect(await page.locator("#conversations li").evaluateAll((items) => items.map((li) => li.dataset.status)))
    .toEqual(["streaming", "done", "cancelled"])
  await context.close()
  await phone.close()
})

/** Boxes of the page's parts that a user must reach, and how wide the document is, at the page's viewport. */
async function layout(page) {
  return page.evaluate(() => {
    const box = (el) => { const r = el.getBoundingClientRect(); return { left: r.left, right: r.right, top: r.top, bottom: r.bottom, visible: r.width > 0 && r.height > 0 } }
    const parts = {}
    for (const id of ["input", "send", "stop", "connection", "new-session", "share", "take-over", "presence"]) {
      const el = document.getElementById(id)
      if (el && !el.hidden) parts[id] = box(el)
    }
    return {
      width: window.innerWidth,
      height: window.innerHeight,
      scrollWidth: Math.max(document.documentElement.scrollWidth, document.body.scrollWidth),
      parts,
      messages: [...document.querySelectorAll("#conversation .message")].map(box),
    }
  })
}

function expectOnScreen(view, what) {
  expect(view.scrollWidth, `${what}: the page scrolls sideways`).toBeLessThanOrEqual(view.width)
  for (const [id, box] of Object.entries(view.parts)) {
    expect(box.visible, `${what}: #${id} is visible`).toBe(true)
    expect(box.left, `${what}: #${id} starts on screen`).toBeGreaterThanOrEqual(0)
    expect(box.right, `${what}: #${id} ends on screen`).toBeLessThanOrEqual(view.width)
    expect(box.bottom, `${what}: #${id} is above the bottom edge`).toBeLessThanOrEqual(view.height)
  }
  for (const box of view.messages) {
    expect(box.left, `${what}: a message starts on screen`).toBeGreaterThanOrEqual(0)
    expect(box.right, `${what}: a message ends on screen`).toBeLessThanOrEqual(view.width)
  }
}

for (const [name, viewport, mobile] of [["a 390 px phone", { width: 390, height: 844 }, true], ["a 1280 px desktop", { width: 1280, height: 800 }, false]]) {
  test(`on ${name} the page fits the screen: no sideways scroll, composer, Send, Stop and status on screen, no failed request`, async () => {
    const id = sessionId(mobile ? "phone" : "desktop")
    const context = await browser.newContext({ viewport, isMobile: mobile, hasTouch: mobile, deviceScaleFactor: mobile ? 3 : 1 })
    const page = await context.newPage()
    const failed = []
    page.on("response", (r) => { if (r.status() >= 400) failed.push(`${r.status()} ${r.url()}`) })
    await page.goto(`${server.url}/#${id}`)
    await page.locator("#connection.live").waitFor({ timeout: 15_000 })

    await send(page, "A question long enough to wrap across several lines on a narrow phone screen, with a_rather_long_unbroken_word_that_must_not_push_the_page_sideways_at_all_0123456789")
    await until(() => replyStreaming(page, 20), 20_000, "the reply to start streaming")
    const streaming = await layout(page)
    expect(streaming.parts.stop, "Stop is shown while the reply streams").toBeDefined()
    expect(streaming.parts["take-over"], "the takeover control is reachable").toBeDefined()
    expectOnScreen(streaming, `${name}, streaming`)

    await until(async () => (await stored(id)).run?.status === "finished", 30_000, "the reply to finish")
    await until(async () => (await page.locator("#conversation .message.assistant.streaming").count()) === 0, 10_000, "the page to show it finished")
    expectOnScreen(await layout(page), `${name}, finished`)
    expect(await page.locator("#conversation .message").count()).toBe(2)
    expect(failed, "requests that failed").toEqual([])
    // The icon the page names and the one browsers ask for by default are both served.
    const icon = await page.evaluate(() => document.querySelector("link[rel=icon]")?.href)
    for (const url of [icon, `${server.url}/favicon.ico`]) {
      const response = await fetch(url)
      expect(response.status, url).toBe(200)
      expect(response.headers.get("content-type"), url).toMatch(/^image\//)
    }

    mkdirSync(artifacts, { recursive: true })
    await page.screenshot({ path: join(artifacts, mobile ? "demo-page-phone.png" : "demo-page-desktop.png") })
    await context.close()
  })
}
