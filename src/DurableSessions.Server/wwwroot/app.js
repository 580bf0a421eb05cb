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

function render() {
  if (!state) return
  const conversation = $("conversation")
  const nearBottom = conversation.scrollHeight - conversation.scrollTop - conversation.clientHeight < 80
  const messages = state.all("message")
  conversation.replaceChildren(...messages.map((m) => {
    const el = document.createElement("div")
    el.className = `message ${m.role} ${m.status ?? ""}`
    const text = document.createElement("div")
    text.className = "text"
    text.textContent = (m.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("")
    el.append(text)
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
    return el
  }))
  if (nearBottom) conversation.scrollTop = conversation.scrollHeight

  const active = state.all("run").findLast((r) => r.status === "started")
  $("stop").hidden = !active
  $("stop").dataset.run = active?.id ?? ""

  const present = state.all("presence").filter((p) => p.status === "joined")
  $("presence").replaceChildren(...present.map((p) => {
    const li = document.createElement("li")
    li.className = p.kind
    li.textContent = p.id === participant ? `${p.name ?? p.id} (you)` : p.name ?? p.id
    return li
  }))

  const lease = state.get("handoff", "lease")
  human = lease?.kind === "human" && lease.holder === participant
  $("lease").textContent = lease?.kind === "human" ? `${lease.holder} is answering.` : "The agent answers."
  $("take-over").textContent = human ? "Hand back to the agent" : "Take over as human"
}

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
  $("input").value = ""
  await session.sendMessage(text, human ? "assistant" : "user")
})
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
beat()
setInterval(beat, 10_000)
follow()
