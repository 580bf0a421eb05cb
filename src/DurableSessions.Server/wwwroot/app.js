// The demo chat page: one durable session, shared by every tab and device that opens the same URL.
import { DurableSessionsClient } from "/lib/durable-sessions.js"

const $ = (id) => document.getElementById(id)
const sessionId = location.hash.slice(1) || `chat-${Math.random().toString(36).slice(2, 8)}`
if (!location.hash) history.replaceState(null, "", `#${sessionId}`)
$("session-id").textContent = sessionId

const participant = sessionStorage.getItem("participant") ?? `client:${Math.random().toString(36).slice(2, 8)}`
sessionStorage.setItem("participant", participant)
// sessionStorage keeps the conversation and its offset per tab: a reload resumes the live tail where it was.
const client = new DurableSessionsClient({ baseUrl: location.origin, participantId: participant, storage: sessionStorage })
const session = client.session(sessionId)
let human = false
let state = null
// The id of this tab's message being edited in the composer, or null.
let editing = null

function setEditing(id, text = "", problem = "") {
  editing = id
  $("editing").hidden = !id
  $("edit-problem").textContent = problem
  $("input").value = text
  $("send").textContent = id ? "Save" : "Send"
  if (id) $("input").focus()
}

function render() {
  if (!state) return
  const conversation = $("conversation")
  const nearBottom = conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 80
  const messages = state.all("message")
  const active = state.all("run").findLast((r) => r.status === "started")
  // The latest reply, when nothing is being written, can be answered again: the agent rewrites it in place.
  const latestUser = messages.findLast((m) => m.role === "user")
  const again = !active && state.get("handoff", "lease")?.kind !== "human" && messages.at(-1)?.role === "assistant" && messages.at(-1).runId
    && state.all("run").some((r) => r.id === messages.at(-1).runId && r.trigger === latestUser?.id) ? messages.at(-1) : null
  // This tab's own questions can be edited (an earlier one takes the conversation after it out), unless a human answers.
  const editable = state.get("handoff", "lease")?.kind !== "human"
  // The message being edited is gone (an edit in another tab took it out): what is typed stays, as a new message.
  if (editing && !messages.some((m) => m.id === editing)) setEditing(null, $("input").value)
  conversation.replaceChildren(...messages.map((m) => {
    const el = document.createElement("div")
    el.className = `message ${m.role} ${m.status ?? ""}`
    const text = document.createElement("div")
    text.className = "text"
    text.textContent = (m.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("")
    el.append(text)
    if (editable && m.role === "user" && m.author === participant) {
      const button = document.createElement("button")
      button.type = "button"
      button.className = "edit ghost"
      button.textContent = "Edit"
      button.addEventListener("click", () => setEditing(m.id, text.textContent))
      el.append(button)
    }
    if (m.role === "assistant" && m.status && m.status !== "complete" && m.status !== "streaming") {
      const meta = document.createElement("div")
      meta.className = "meta"
      meta.textContent = m.status
      el.append(meta)
    } else if (m.author && m.role === "assistant") {
      const meta = document.createElement("div")
      meta.className = "meta"
      meta.textContent = m.author
      el.append(meta)
    }
    if (m === again) {
      const button = document.createElement("button")
      button.type = "button"
      button.className = "again ghost"
      button.textContent = "Answer again"
      button.addEventListener("click", () => session.regenerate(m.id).catch(() => {}))
      el.append(button)
    }
    return el
  }))
  if (nearBottom) conversation.scrollTop = conversation.scrollHeight

  $("stop").hidden = !active
  $("stop").dataset.run = active?.id ?? ""

  const present = state.all("presence").filter((p) => p.status === "joined")
  $("presence").replaceChildren(...present.map((p) => {
    const li = document.createElement("li")
    li.className = p.kind
    li.textContent = p.id === participant ? `${p.name ?? p.id} (you)` : p.name ?? p.id
    return li
  }))

  summaries.set(sessionId, summarize(state))
  renderConversations()

  const lease = state.get("handoff", "lease")
  human = lease?.kind === "human" && lease.holder === participant
  $("lease").textContent = lease?.kind === "human" ? `${lease.holder} is answering.` : "The agent answers."
  $("take-over").textContent = human ? "Hand back to the agent" : "Take over as human"
}

// The conversations this browser opened, newest first. Each one is followed live on the page's one WebSocket (the
// client shares it between every session it joins), so the list shows which replies are streaming, done or cancelled
// without one connection per conversation.
const recentKey = "durable-sessions:recent"
const maxRecent = 20
const summaries = new Map()
const followed = new Set([sessionId])

function recentSessions() {
  try {
    const ids = JSON.parse(localStorage.getItem(recentKey) ?? "[]")
    return Array.isArray(ids) ? ids.filter((id) => typeof id === "string" && /^[A-Za-z0-9._-]{1,128}$/.test(id)) : []
  } catch {
    return []
  }
}

function remember(id) {
  const ids = [id, ...recentSessions().filter((other) => other !== id)].slice(0, maxRecent)
  localStorage.setItem(recentKey, JSON.stringify(ids))
  return ids
}

function forget(id) {
  localStorage.setItem(recentKey, JSON.stringify(recentSessions().filter((other) => other !== id)))
  summaries.delete(id)
  renderConversations()
}

/** A session's title and the state of its latest run, from its materialized state. */
function summarize(state) {
  const first = state.all("message").find((m) => m.role === "user")
  const text = (first?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("").trim()
  const run = state.all("run").at(-1)
  const status = !run ? "new" : run.status === "started" ? "streaming" : run.status === "finished" ? "done" : run.status
  return { title: state.get("session", "session")?.title || text || null, status }
}

// Many sessions may stream at once: draw the list at most once per frame.
let listFrame = 0
function renderConversations() {
  listFrame ||= requestAnimationFrame(() => {
    listFrame = 0
    drawConversations()
  })
}

function drawConversations() {
  const ids = recentSessions().filter((id) => summaries.has(id) || id === sessionId)
  $("conversations").replaceChildren(...ids.map((id) => {
    const summary = summaries.get(id) ?? { title: null, status: "new" }
    const li = document.createElement("li")
    li.dataset.session = id
    li.dataset.status = summary.status
    if (id === sessionId) li.className = "current"
    const a = document.createElement("a")
    a.href = `#${id}`
    const title = document.createElement("span")
    title.className = "title"
    title.textContent = summary.title ?? id
    const status = document.createElement("span")
    status.className = "status"
    status.textContent = summary.status
    a.append(title, status)
    li.append(a)
    return li
  }))
}

async function followSummary(id) {
  followed.add(id)
  try {
    for await (const update of client.session(id).join()) {
      summaries.set(id, summarize(update.state))
      renderConversations()
    }
  } catch (error) {
    if (error?.status === 404 || error?.status === 410) forget(id) // deleted or expired
  }
}

function followRecent() {
  for (const id of recentSessions()) if (!followed.has(id)) followSummary(id)
  renderConversations()
}

// A conversation opened in another tab joins the list.
window.addEventListener("storage", (e) => e.key === recentKey && followRecent())

async function follow() {
  for await (const update of session.join(undefined, (c) => {
    $("connection").textContent = c
    $("connection").className = `pill ${c}`
  })) {
    state = update.state
    render()
  }
}

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault()
  const text = $("input").value.trim()
  if (!text) return
  const edited = editing
  setEditing(null)
  if (edited) {
    // Not saved (another participant wrote after it, say): the text goes back into the composer, with the reason.
    await session.edit(edited, text).catch((error) => setEditing(edited, text, `Not saved: ${error?.message ?? error}`))
  } else {
    await session.sendMessage(text, human ? "assistant" : "user")
  }
})
$("cancel-edit").addEventListener("click", () => setEditing(null))
$("stop").addEventListener("click", () => $("stop").dataset.run && session.cancel($("stop").dataset.run).catch(() => {}))
$("take-over").addEventListener("click", () => (human ? session.returnControl() : session.takeControl()).catch(() => {}))
$("share").addEventListener("click", async () => {
  await navigator.clipboard?.writeText(location.href).catch(() => {})
  $("share").textContent = "Link copied"
  setTimeout(() => ($("share").textContent = "Share"), 1500)
})
$("new-session").addEventListener("click", () => { location.hash = ""; location.reload() })
window.addEventListener("hashchange", () => location.reload())

// Presence: announce this tab and keep beating; a closed tab stops beating and is marked left after the timeout.
const beat = () => session.heartbeat("client", `Tab ${participant.slice(-4)}`).catch(() => {})

// Opening a link to a new session creates it; the heartbeat needs it to exist.
await session.create().catch(() => {})
remember(sessionId)
beat()
setInterval(beat, 10_000)
follow()
followRecent()
