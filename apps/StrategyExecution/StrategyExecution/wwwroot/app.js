// The strategy execution page: the org's scorecards with computed scores and colours, "why this colour", recording
// actuals, and a live feed that follows the app's audit stream so every open page updates as changes land.
const $ = (id) => document.getElementById(id)
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props)
  node.append(...children.filter((c) => c !== null && c !== undefined))
  return node
}
const fmt = (n, digits = 1) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en", { maximumFractionDigits: digits }))
const perspectives = { financial: "Financial", customer: "Customer", "internal-process": "Internal process", "learning-and-growth": "Learning and growth" }
const rank = { admin: 0, owner: 1, updater: 2, viewer: 3 }

let people = new Map()
let me = null
let units = []
let unitId = Number(location.hash.match(/^#unit-(\d+)$/)?.[1] ?? 1)
const openWhy = new Set()

function cookie(name) {
  return document.cookie.split("; ").find((c) => c.startsWith(`${name}=`))?.slice(name.length + 1)
}

async function api(path, init) {
  const response = await fetch(path, init)
  const body = response.status === 204 ? null : await response.json()
  if (!response.ok) throw Object.assign(new Error(body?.error?.message ?? `HTTP ${response.status}`), { status: response.status, body })
  return body
}

/** Whether the acting person may record actuals for `unit`: updater or more on it or any unit above it. */
function canUpdate(unit) {
  if (!me) return false
  const parents = new Map(units.map((u) => [u.id, u.parentId]))
  for (let at = unit; at != null; at = parents.get(at)) {
    if (me.roles.some((r) => r.unitId === at && rank[r.role] <= rank.updater)) return true
  }
  return false
}

function renderUnits() {
  const children = (parent) => units.filter((u) => (u.parentId ?? null) === parent)
  const tree = (parent) => {
    const list = el("ul")
    for (const u of children(parent)) {
      const li = el("li", { className: u.id === unitId ? "current" : "" })
      li.dataset.unit = u.id
      li.dataset.color = u.color
      li.append(el("a", { href: `#unit-${u.id}` }, el("span", { className: `dot ${u.color}` }), el("span", { className: "name", textContent: u.name }), el("span", { className: "score", textContent: fmt(u.score) })))
      if (children(u.id).length) li.append(tree(u.id))
      list.append(li)
    }
    return list
  }
  $("units").replaceChildren(...tree(null).children)
}

function renderScorecard(card) {
  const head = el("div", { className: "card-head" },
    el("h1", { textContent: card.unit.name }),
    el("span", { className: `badge ${card.unit.color}`, id: "unit-score", textContent: card.unit.score === null ? "no score" : `${fmt(card.unit.score)} · ${card.unit.color}` }),
    el("span", { className: "muted", textContent: card.periodName }))
  const sections = []
  for (const [key, title] of Object.entries(perspectives)) {
    const objectives = card.objectives.filter((o) => o.perspective === key)
    if (!objectives.length) continue
    sections.push(el("div", { className: "perspective", textContent: title }))
    for (const o of objectives) sections.push(renderObjective(o, canUpdate(card.unit.id)))
  }
  if (card.children.length) {
    sections.push(el("div", { className: "perspective", textContent: "Units below" }))
    sections.push(el("table", {}, ...card.children.map((c) => el("tr", {},
      el("td", {}, el("span", { className: `dot ${c.color}` })), el("td", {}, el("a", { href: `#unit-${c.id}`, textContent: c.name })), el("td", { className: "num", textContent: fmt(c.score) })))))
  }
  $("scorecard").replaceChildren(head, ...sections)
}

function renderObjective(o, editable) {
  const box = el("div", { className: `objective ${o.color}` })
  box.dataset.objective = o.id
  box.dataset.color = o.color
  const aligned = o.parentObjectiveId ? `aligned to: ${o.parentObjectiveName}` : o.standaloneReason ? `standalone: ${o.standaloneReason}` : ""
  box.append(el("div", { className: "objective-head" },
    el("span", { className: "title", textContent: o.name }),
    el("span", { className: "aligned", textContent: aligned }),
    el("span", { className: `badge ${o.color}`, textContent: o.score === null ? "no score" : fmt(o.score) })))
  const rows = o.measures.map((m) => {
    const tr = el("tr", {})
    tr.dataset.measure = m.id
    tr.dataset.color = m.color
    const target = m.target ? (m.direction === "band" ? `${fmt(m.target.target, 2)}–${fmt(m.target.targetHigh, 2)}` : fmt(m.target.target, 2)) : "—"
    const why = el("button", { className: "link", textContent: "why?", title: "Why this colour" })
    why.addEventListener("click", () => { openWhy.has(m.id) ? openWhy.delete(m.id) : openWhy.add(m.id); refresh() })
    const nameCell = el("td", {}, m.name, el("span", { className: "muted", textContent: ` (${m.unit}, ${m.direction} is better)`.replace("band is better", "in a band") }))
    if (m.stale) nameCell.append(el("div", { className: "stale", textContent: "stale: no recent actual" }))
    if (openWhy.has(m.id)) nameCell.append(el("div", { className: "why" }, el("div", { textContent: m.why.position }), el("div", { textContent: m.why.formula }), el("div", { textContent: m.why.colorRule })))
    tr.append(nameCell,
      el("td", { className: "num actual", textContent: `${fmt(m.actual, 2)}${m.month ? ` (${m.month})` : ""}` }),
      el("td", { className: "num", textContent: target }),
      el("td", { className: "num" }, el("span", { className: `dot ${m.color}` }), " ", el("span", { className: "measure-score", textContent: fmt(m.score) }), why))
    if (editable) tr.append(el("td", {}, recordForm(m)))
    return tr
  })
  box.append(el("table", {}, el("tr", {}, ...["Measure", "Actual", "Target", "Score", ...(editable ? ["Record"] : [])].map((h) => el("th", { textContent: h }))), ...rows))
  return box
}

function recordForm(m) {
  const now = new Date()
  const last = new Date(now.getFullYear(), now.getMonth() - 1, 1)
  const month = el("input", { type: "month", value: `${last.getFullYear()}-${String(last.getMonth() + 1).padStart(2, "0")}`, ariaLabel: "Month" })
  const value = el("input", { type: "number", step: "any", required: true, ariaLabel: "Value" })
  const error = el("span", { className: "error" })
  const form = el("form", { className: "record" }, month, value, el("button", { type: "submit", textContent: "Save" }), error)
  form.addEventListener("submit", async (e) => {
    e.preventDefault()
    error.textContent = ""
    try {
      await api(`/api/measures/${m.id}/actuals`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ month: month.value, value: Number(value.value), source: "form" }) })
      await refresh()
    } catch (err) {
      error.textContent = err.body?.error?.details?.join(" ") ?? err.message
    }
  })
  return form
}

let refreshing = null
let again = false
/** Reloads the scores; calls that arrive while one runs are folded into one more. */
async function refresh() {
  if (refreshing) { again = true; return refreshing }
  refreshing = (async () => {
    do {
      again = false
      const [list, card] = await Promise.all([api("/api/units"), api(`/api/scorecards/${unitId}`)])
      units = list
      renderUnits()
      renderScorecard(card)
    } while (again)
  })().finally(() => { refreshing = null })
  return refreshing
}

function describe(entry) {
  const who = people.get(entry.actorId)?.name ?? `person ${entry.actorId}`
  const d = entry.details ?? {}
  if (entry.action === "actual.recorded") return `${who} recorded ${fmt(d.value, 2)} for ${d.month} on ${entry.subject}`
  return `${who}: ${entry.action} ${entry.subject}`
}

/** Follows the audit stream live from now; each change refreshes the scores it may have moved. */
function follow() {
  const source = new EventSource("/v1/stream/strategy/audit?offset=now&live=sse")
  source.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "pill live"; refresh() })
  source.addEventListener("error", () => { $("live").textContent = "reconnecting"; $("live").className = "pill" })
  source.addEventListener("data", (e) => {
    const entries = JSON.parse(e.data)
    for (const entry of entries) {
      const li = el("li", {}, el("time", { textContent: new Date(entry.at).toLocaleTimeString() }), describe(entry))
      li.dataset.audit = entry.id
      $("feed").prepend(li)
    }
    refresh()
  })
}

async function start() {
  const [list, strategy, periods] = await Promise.all([api("/api/people"), api("/api/strategy"), api("/api/periods")])
  people = new Map(list.map((p) => [p.id, p]))
  const chosen = Number(cookie("person") ?? 1)
  $("person").replaceChildren(...list.map((p) => el("option", { value: p.id, textContent: p.name, selected: p.id === chosen })))
  document.cookie = `person=${chosen}; path=/; SameSite=Lax`
  me = await api("/api/me").catch(() => null)
  $("person").addEventListener("change", async () => {
    document.cookie = `person=${$("person").value}; path=/; SameSite=Lax`
    me = await api("/api/me").catch(() => null)
    refresh()
  })
  const active = periods.find((p) => p.status === "active")
  $("period").textContent = active ? `${active.name} (active)` : ""
  if (strategy.statement) {
    $("strategy").replaceChildren(el("div", { className: "vision", textContent: strategy.statement.vision }), el("div", { className: "muted", textContent: strategy.statement.mission }))
  }
  window.addEventListener("hashchange", () => { unitId = Number(location.hash.match(/^#unit-(\d+)$/)?.[1] ?? 1); refresh() })
  await refresh()
  follow()
}

start()
