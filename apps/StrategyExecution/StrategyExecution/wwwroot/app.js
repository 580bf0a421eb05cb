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

async function api(path, init) {
  const response = await fetch(path, init)
  const body = response.status === 204 ? null : await response.json()
  if (!response.ok) throw Object.assign(new Error(body?.error?.message ?? `HTTP ${response.status}`), { status: response.status, body })
  return body
}

/** Whether the acting person holds `role` or a stronger one on `unit` or any unit above it. */
function holds(unit, role) {
  if (!me) return false
  const parents = new Map(units.map((u) => [u.id, u.parentId]))
  for (let at = unit; at != null; at = parents.get(at)) {
    if (me.roles.some((r) => r.unitId === at && rank[r.role] <= rank[role])) return true
  }
  return false
}
const canUpdate = (unit) => holds(unit, "updater")
const canOwn = (unit) => holds(unit, "owner")

/** Every row of a list the API answers a page at a time (`take`, `after` the last row's id). */
async function all(path) {
  const rows = []
  for (let after = null; ; ) {
    const page = await api(`${path}${path.includes("?") ? "&" : "?"}take=500${after == null ? "" : `&after=${after}`}`)
    rows.push(...page)
    if (page.length < 500) return rows
    after = page[page.length - 1].id
  }
}

async function post(path, body, method = "POST") {
  return api(path, { method, headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
}

/** A small form whose errors (the API's details) show next to it; `submit` gets the form's values by name. */
function smallForm(className, fields, label, submit) {
  const error = el("span", { className: "error" })
  const form = el("form", { className }, ...fields, el("button", { type: "submit", textContent: label }), error)
  form.addEventListener("submit", async (e) => {
    e.preventDefault()
    error.textContent = ""
    try {
      await submit(Object.fromEntries(fields.filter((f) => f.name).map((f) => [f.name, f.value])))
      form.reset()
      await refresh()
    } catch (err) {
      error.textContent = err.body?.error?.details?.join(" ") ?? err.message
    }
  })
  return form
}

/** Where a form field lives, so the same field can be found again after the content is drawn anew. */
function fieldKey(field) {
  const owner = field.closest("[data-measure],[data-objective],[data-initiative]")
  return `${field.form?.className}|${owner?.dataset.measure ?? ""}|${owner?.dataset.objective ?? ""}|${owner?.dataset.initiative ?? ""}|${field.name}`
}

/**
 * Replaces the main content, keeping what the user is typing: every change anywhere redraws the page, and a half-filled
 * form must survive it (values and focus are carried over to the same fields).
 */
function replaceContent(...nodes) {
  const content = $("scorecard")
  const kept = new Map()
  let focused = null
  for (const field of content.querySelectorAll("form input[name], form select[name]")) {
    if (field.tagName === "SELECT" || field.value !== field.defaultValue) kept.set(fieldKey(field), field.value)
    if (field === document.activeElement) focused = fieldKey(field)
  }
  content.replaceChildren(...nodes)
  for (const field of content.querySelectorAll("form input[name], form select[name]")) {
    const key = fieldKey(field)
    if (kept.has(key)) field.value = kept.get(key)
    if (key === focused) field.focus()
  }
}

const input = (name, placeholder, props = {}) => el("input", { name, placeholder, ariaLabel: placeholder, ...props })
const select = (name, label, options) => el("select", { name, ariaLabel: label }, ...options.map(([value, text]) => el("option", { value, textContent: text })))
const num = (v) => (v === "" || v === undefined ? null : Number(v))

function renderHealth(health) {
  const box = el("div", { className: "health", id: "health" })
  box.append(el("h3", { textContent: health.items.length ? `Alignment health: ${health.items.length} to fix` : "Alignment health: all aligned" }))
  if (health.items.length) {
    box.append(el("ul", {}, ...health.items.slice(0, 50).map((item) => {
      const li = el("li", {}, el("span", { className: `kind ${item.kind}`, textContent: item.kind.replaceAll("-", " ") }), ` ${item.name} `, el("a", { href: `#unit-${item.unitId}`, textContent: units.find((u) => u.id === item.unitId)?.name ?? "" }), el("div", { className: "muted", textContent: item.message }))
      li.dataset.kind = item.kind
      li.dataset.id = item.id
      return li
    })))
  }
  return box
}

/** The owner's form to add an objective, aligned to one of the parent unit's or standalone with a reason. */
function objectiveForm(card, parentObjectives) {
  return smallForm("build add-objective", [
    input("name", "New objective", { required: true }),
    select("perspective", "Perspective", Object.entries(perspectives)),
    select("parentObjectiveId", "Aligned to", [["", "aligned to nothing"], ...parentObjectives.map((o) => [o.id, o.name])]),
    input("standaloneReason", "or standalone because…"),
  ], "Add objective", (v) => post("/api/objectives", {
    unitId: card.unit.id, periodId: card.periodId, name: v.name, perspective: v.perspective,
    parentObjectiveId: num(v.parentObjectiveId), standaloneReason: v.standaloneReason || null,
  }))
}

function measureForm(objective) {
  return smallForm("build add-measure", [
    input("name", "New measure", { required: true }),
    input("unit", "Unit", { required: true, size: 6 }),
    select("direction", "Direction", [["higher", "higher is better"], ["lower", "lower is better"], ["band", "in a band"]]),
  ], "Add measure", (v) => post("/api/measures", { objectiveId: objective.id, name: v.name, unit: v.unit, direction: v.direction }))
}

function targetForm(m) {
  const fields = [input("redFlag", "Red flag", { type: "number", step: "any", required: true, size: 6 }), input("target", m.direction === "band" ? "Target low" : "Target", { type: "number", step: "any", required: true, size: 6 })]
  fields.push(m.direction === "band"
    ? input("targetHigh", "Target high", { type: "number", step: "any", required: true, size: 6 })
    : input("stretch", "Stretch", { type: "number", step: "any", size: 6 }))
  if (m.direction === "band") fields.push(input("redFlagHigh", "Red flag high", { type: "number", step: "any", required: true, size: 6 }))
  return smallForm("build set-target", fields, "Set target", (v) => post(`/api/measures/${m.id}/target`,
    { redFlag: num(v.redFlag), target: num(v.target), stretch: num(v.stretch), targetHigh: num(v.targetHigh), redFlagHigh: num(v.redFlagHigh) }, "PUT"))
}

function renderUnits() {
  // The export holds everyone's pay: only the company's admins are offered it (and only they get it).
  const company = units.find((u) => u.parentId == null)?.id
  $("export-item").hidden = !(company != null && holds(company, "admin"))
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

function renderScorecard(card, health, parentObjectives) {
  const head = el("div", { className: "card-head" },
    el("h1", { textContent: card.unit.name }),
    el("span", { className: `badge ${card.unit.color}`, id: "unit-score", textContent: card.unit.score === null ? "no score" : `${fmt(card.unit.score)} · ${card.unit.color}` }),
    el("span", { className: "muted", textContent: card.periodName }))
  const sections = []
  for (const [key, title] of Object.entries(perspectives)) {
    const objectives = card.objectives.filter((o) => o.perspective === key)
    if (!objectives.length) continue
    sections.push(el("div", { className: "perspective", textContent: title }))
    for (const o of objectives) sections.push(renderObjective(o, canUpdate(card.unit.id), canOwn(card.unit.id)))
  }
  if (card.children.length) {
    sections.push(el("div", { className: "perspective", textContent: "Units below" }))
    sections.push(el("table", {}, ...card.children.map((c) => el("tr", {},
      el("td", {}, el("span", { className: `dot ${c.color}` })), el("td", {}, el("a", { href: `#unit-${c.id}`, textContent: c.name })), el("td", { className: "num", textContent: fmt(c.score) })))))
  }
  if (canOwn(card.unit.id)) sections.push(el("div", { className: "perspective", textContent: "Build" }), objectiveForm(card, parentObjectives))
  replaceContent(head, renderHealth(health), ...sections)
}

function renderObjective(o, editable, owner) {
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
    if (editable) tr.append(el("td", {}, owner && !m.target ? targetForm(m) : recordForm(m)))
    return tr
  })
  box.append(el("table", {}, el("tr", {}, ...["Measure", "Actual", "Target", "Score", ...(editable ? ["Record"] : [])].map((h) => el("th", { textContent: h }))), ...rows))
  if (owner) box.append(measureForm(o))
  return box
}

function recordForm(m) {
  const now = new Date()
  const last = new Date(now.getFullYear(), now.getMonth() - 1, 1)
  const month = el("input", { name: "month", type: "month", defaultValue: `${last.getFullYear()}-${String(last.getMonth() + 1).padStart(2, "0")}`, ariaLabel: "Month" })
  const value = el("input", { name: "value", type: "number", step: "any", required: true, ariaLabel: "Value" })
  const error = el("span", { className: "error" })
  const form = el("form", { className: "record" }, month, value, el("button", { type: "submit", textContent: "Save" }), error)
  form.addEventListener("submit", async (e) => {
    e.preventDefault()
    error.textContent = ""
    try {
      await api(`/api/measures/${m.id}/actuals`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ month: month.value, value: Number(value.value), source: "form" }) })
      form.reset()
      await refresh()
    } catch (err) {
      error.textContent = err.body?.error?.details?.join(" ") ?? err.message
    }
  })
  return form
}

const money = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString("en", { minimumFractionDigits: 0, maximumFractionDigits: 0 }))
const ratio = (n) => (n === null || n === undefined ? "—" : Number(n).toFixed(2))

function renderBudgets(b) {
  const head = el("div", { className: "card-head" }, el("h1", { textContent: "Budgets" }), el("span", { className: "muted", textContent: "strategic-expenditure pools, allocations, spend and earned value" }))
  const pools = el("table", { id: "pools" }, el("tr", {}, ...["Pool", "Amount", "Allocated", "Available", ""].map((h) => el("th", { textContent: h }))),
    ...b.pools.map((p) => {
      const tr = el("tr", {}, el("td", { textContent: p.name }), el("td", { className: "num", textContent: money(p.amount) }), el("td", { className: "num", textContent: money(p.allocated) }),
        el("td", { className: "num available", textContent: money(p.available) }), el("td", {}, p.ringfenced ? el("span", { className: "kind", textContent: "ringfenced" }) : null))
      tr.dataset.pool = p.id
      return tr
    }))
  const names = new Map(units.map((u) => [u.id, u.name]))
  const initiatives = el("table", { id: "initiatives" }, el("tr", {}, ...["Initiative", "Allocated", "Spent", "Variance", "CPI", "SPI", "Milestones done / due", ""].map((h) => el("th", { textContent: h }))),
    ...b.initiatives.map((i) => {
      const tr = el("tr", {}, el("td", {}, i.name, el("div", { className: "muted", textContent: names.get(i.unitId) ?? "" })), el("td", { className: "num", textContent: money(i.allocated) }),
        el("td", { className: "num", textContent: money(i.spent) }), el("td", { className: "num", textContent: money(i.variance.variance) }),
        el("td", { className: "num", textContent: ratio(i.earnedValue.costPerformanceIndex) }), el("td", { className: "num", textContent: ratio(i.earnedValue.schedulePerformanceIndex) }),
        el("td", { className: "num", textContent: `${i.milestonesDone} / ${i.milestonesDue} (of ${i.milestones})` }))
      tr.dataset.initiative = i.id
      // Its milestones for everyone; "Done" for its updaters, a new milestone for its owners.
      const steps = el("ul", { className: "milestones" }, ...i.plan.map((m) => {
        const li = el("li", { textContent: `${m.name}, due ${m.due}${m.doneOn ? `, done ${m.doneOn}` : ""} ` })
        li.dataset.milestone = m.id
        if (!m.doneOn && holds(i.unitId, "updater")) {
          const done = el("button", { className: "link", textContent: "Done" })
          done.addEventListener("click", () => post(`/api/milestones/${m.id}/done`, {}).then(refresh, (e) => alert(e.message)))
          li.append(done)
        }
        return li
      }))
      const plan = el("details", { className: "plan", open: openPlans.has(i.id) }, el("summary", { textContent: "Milestones" }), steps)
      if (canOwn(i.unitId)) {
        plan.append(smallForm("build milestone", [
          input("name", "Milestone", { required: true, maxLength: 200 }),
          input("due", "Due", { type: "date", required: true }),
        ], "Add milestone", (v) => post(`/api/initiatives/${i.id}/milestones`, { name: v.name, due: v.due })))
      }
      plan.addEventListener("toggle", () => (plan.open ? openPlans.add(i.id) : openPlans.delete(i.id)))
      tr.append(el("td", {}, plan))
      return tr
    }))
  const sections = [head, el("div", { className: "perspective", textContent: "Pools" }), pools]
  const company = units.find((u) => u.parentId == null)?.id
  if (company && canOwn(company)) {
    sections.push(smallForm("build allocate", [
      select("poolId", "Pool", b.pools.map((p) => [p.id, p.name])),
      select("initiativeId", "Initiative", b.initiatives.map((i) => [i.id, i.name])),
      input("amount", "Amount", { type: "number", step: "0.01", min: "0.01", required: true }),
    ], "Allocate", (v) => post(`/api/pools/${v.poolId}/allocations`, { initiativeId: Number(v.initiativeId), amount: Number(v.amount) })))
    sections.push(smallForm("build release", [
      select("poolId", "Pool", b.pools.map((p) => [p.id, p.name])),
      input("amount", "Amount", { type: "number", step: "0.01", min: "0.01", required: true }),
      input("reason", "Why the money leaves the pool", { required: true, maxLength: 300 }),
    ], "Request release", (v) => post(`/api/pools/${v.poolId}/releases`, { amount: Number(v.amount), reason: v.reason })))
  }
  sections.push(el("div", { className: "perspective", textContent: "Initiatives" }), initiatives)
  const owned = units.filter((u) => canOwn(u.id))
  if (owned.length) sections.push(initiativeForm(owned))
  // Spend on an initiative by its updaters; spend on no initiative by the company's owners.
  const spendable = b.initiatives.filter((i) => holds(i.unitId, "updater")).map((i) => [i.id, i.name])
  if (company && canOwn(company)) spendable.push(["", "— on no initiative —"])
  if (spendable.length) {
    sections.push(smallForm("build spend", [
      select("initiativeId", "Spent on", spendable),
      input("amount", "Amount", { type: "number", step: "0.01", min: "0.01", required: true }),
      // Money already spent: no later than today (the app allows a day ahead of UTC for time zones east of it).
      input("on", "On", { type: "date", required: true, defaultValue: new Date().toISOString().slice(0, 10), max: new Date(Date.now() + 86_400_000).toISOString().slice(0, 10) }),
      input("description", "What for", { required: true, maxLength: 300 }),
    ], "Record spend", (v) => post("/api/spend", { initiativeId: v.initiativeId ? Number(v.initiativeId) : null, amount: Number(v.amount), on: v.on, description: v.description })))
  }
  if (b.unlinkedSpend.length) {
    sections.push(el("div", { className: "perspective", textContent: "Spend not linked to strategy" }),
      el("ul", {}, ...b.unlinkedSpend.map((s) => el("li", { textContent: `${s.on}: ${money(s.amount)} — ${s.description}` }))))
  }
  const pending = b.releases.filter((r) => !r.applied)
  if (pending.length) {
    sections.push(el("div", { className: "perspective", textContent: "Releases waiting for approval" }), el("ul", {}, ...pending.map((r) => {
      const li = el("li", { textContent: `${money(r.amount)} from pool ${r.poolId}: ${r.reason} ` })
      if (company && holds(company, "admin")) {
        const approve = el("button", { textContent: "Approve" })
        approve.addEventListener("click", () => post(`/api/releases/${r.id}/approve`, {}).then(refresh, (e) => alert(e.message)))
        li.append(approve)
      }
      return li
    })))
  }
  replaceContent(...sections)
}

/** The initiatives whose milestone form is open: it stays open across redraws. */
const openPlans = new Set()

/** What the new-initiative form holds across redraws (every live change redraws it): its unit and objective. */
const initiativeDraft = { unitId: null, objectiveId: "" }
/** Each unit's objectives, as last read: the form fills from here at once, then reads them again. */
const objectivesOf = new Map()

/**
 * A new initiative in a unit the person owns, linked to one of that unit's objectives (or to nothing, which the
 * health panel then flags); the objectives follow the chosen unit.
 */
function initiativeForm(owned) {
  if (!owned.some((u) => u.id === initiativeDraft.unitId)) initiativeDraft.unitId = owned[0].id
  const unit = select("unitId", "Unit", owned.map((u) => [u.id, u.name]))
  unit.value = String(initiativeDraft.unitId)
  const objective = el("select", { name: "objectiveId", ariaLabel: "Objective" })
  const fill = () => {
    const list = objectivesOf.get(initiativeDraft.unitId) ?? []
    objective.replaceChildren(el("option", { value: "", textContent: "— linked to no objective —" }), ...list.map((o) => el("option", { value: o.id, textContent: o.name })))
    objective.value = list.some((o) => String(o.id) === initiativeDraft.objectiveId) ? initiativeDraft.objectiveId : ""
  }
  const load = async () => {
    const id = initiativeDraft.unitId
    const card = await api(`/api/scorecards/${id}`).catch(() => null)
    objectivesOf.set(id, (card?.objectives ?? []).map((o) => ({ id: o.id, name: o.name })))
    if (id === initiativeDraft.unitId && objective.isConnected) fill()
  }
  unit.addEventListener("change", () => { initiativeDraft.unitId = Number(unit.value); initiativeDraft.objectiveId = ""; fill(); load() })
  objective.addEventListener("change", () => { initiativeDraft.objectiveId = objective.value })
  fill()
  load()
  return smallForm("build initiative", [unit, input("name", "New initiative", { required: true, maxLength: 200 }), objective], "Create initiative", async (v) => {
    await post("/api/initiatives", { unitId: Number(v.unitId), name: v.name, objectiveIds: v.objectiveId ? [Number(v.objectiveId)] : [], measureIds: [] })
    initiativeDraft.objectiveId = ""
  })
}

const svg = (tag, attrs = {}, ...children) => {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag)
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v)
  node.append(...children)
  return node
}
const colors = { red: "#d64545", amber: "#e0a100", green: "#2e9d5b", blue: "#2f6fd6", none: "#b9bfcc" }

/** The strategy map: the company's objectives in the four perspectives, coloured by score, with cause→effect arrows. */
function strategyMap(map) {
  const rows = Object.keys(perspectives)
  const width = 760, rowHeight = 96, boxW = 170, boxH = 54
  const at = new Map()
  rows.forEach((p, row) => {
    const inRow = map.objectives.filter((o) => o.perspective === p)
    inRow.forEach((o, i) => at.set(o.id, { x: ((i + 1) * width) / (inRow.length + 1), y: 20 + row * rowHeight + boxH / 2, o }))
  })
  const drawing = svg("svg", { viewBox: `0 0 ${width} ${rows.length * rowHeight + 10}`, id: "strategy-map", role: "img", "aria-label": "Strategy map" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#6b7287" }))))
  rows.forEach((p, row) => drawing.append(svg("text", { x: 4, y: 14 + row * rowHeight, "font-size": 11, fill: "#6b7287" }, perspectives[p].toUpperCase())))
  for (const link of map.links) {
    const from = at.get(link.causeId), to = at.get(link.effectId)
    if (!from || !to) continue
    const line = svg("line", { x1: from.x, y1: from.y - boxH / 2, x2: to.x, y2: to.y + boxH / 2, stroke: "#6b7287", "stroke-width": 1.5, "marker-end": "url(#arrow)" })
    line.dataset.link = `${link.causeId}-${link.effectId}`
    drawing.append(line)
  }
  for (const { x, y, o } of at.values()) {
    const g = svg("g", {}, svg("rect", { x: x - boxW / 2, y: y - boxH / 2, width: boxW, height: boxH, rx: 8, fill: "#fff", stroke: colors[o.color] ?? colors.none, "stroke-width": 3 }))
    const words = o.name.split(" ")
    const lines = [words.slice(0, Math.ceil(words.length / 2)).join(" "), words.slice(Math.ceil(words.length / 2)).join(" ")]
    lines.forEach((text, i) => g.append(svg("text", { x, y: y - 4 + i * 15, "text-anchor": "middle", "font-size": 12 }, text)))
    g.dataset.objective = o.id
    drawing.append(g)
  }
  return drawing
}

function renderStrategy(strategy, map, announcements) {
  const sections = [el("div", { className: "card-head" }, el("h1", { textContent: "Strategy" }))]
  if (strategy.statement) sections.push(el("p", { className: "vision", textContent: `Vision: ${strategy.statement.vision}` }), el("p", { textContent: `Mission: ${strategy.statement.mission}` }))
  sections.push(el("div", { className: "perspective", textContent: "Themes" }), el("ul", {}, ...strategy.themes.map((t) => el("li", {}, el("strong", { textContent: t.name }), ` — ${t.description}`))))
  sections.push(el("div", { className: "perspective", textContent: "Strategy map" }), strategyMap(map))
  sections.push(el("div", { className: "perspective", textContent: "Announcements" }))
  const company = units.find((u) => u.parentId == null)?.id
  if (me && units.some((u) => canOwn(u.id))) {
    sections.push(smallForm("build announce", [
      input("title", "Title", { required: true }),
      input("body", "What everyone should know", { required: true }),
      select("unitId", "To", units.filter((u) => canOwn(u.id)).map((u) => [u.id, u.name])),
    ], "Publish", (v) => post("/api/announcements", { title: v.title, body: v.body, unitIds: [Number(v.unitId)], requiresAck: true })))
  }
  for (const a of announcements) {
    const box = el("div", { className: "announcement" })
    box.dataset.announcement = a.id
    box.append(el("div", { className: "objective-head" }, el("span", { className: "title", textContent: a.title }),
      el("span", { className: "coverage", textContent: `${a.acknowledged} of ${a.audience} acknowledged` })))
    box.append(el("p", { textContent: a.body }))
    if (a.requiresAck && a.forMe && !a.acknowledgedByMe) box.append(button("Acknowledge", () => post(`/api/announcements/${a.id}/acknowledge`, {}).then(refresh)))
    if (a.acknowledgedByMe) box.append(el("span", { className: "muted acknowledged", textContent: "You acknowledged this." }))
    if (a.unitIds.every((u) => canOwn(u)) && a.acknowledged < a.audience) box.append(" ", button("Remind the rest", () => post(`/api/announcements/${a.id}/remind`, {}).then(refresh), "link"))
    box.append(el("table", {}, el("tr", {}, ...["Unit", "People", "Acknowledged"].map((h) => el("th", { textContent: h }))),
      ...a.coverage.map((c) => el("tr", {}, el("td", { textContent: c.name }), el("td", { className: "num", textContent: c.people }), el("td", { className: "num", textContent: `${c.acknowledged} (${c.percent}%)` })))))
    sections.push(box)
  }
  replaceContent(...sections)
}

/** The "my updates" grid: every measure the acting person updates, one value each for a month, saved together. */
function renderMyUpdates(rows) {
  const head = el("div", { className: "card-head" }, el("h1", { textContent: "My updates" }), el("span", { className: "muted", textContent: `${rows.length} measures, stale ones first` }))
  const now = new Date()
  const last = new Date(now.getFullYear(), now.getMonth() - 1, 1)
  const month = el("input", { name: "month", type: "month", defaultValue: `${last.getFullYear()}-${String(last.getMonth() + 1).padStart(2, "0")}`, ariaLabel: "Month" })
  const error = el("div", { className: "error", id: "grid-errors" })
  const table = el("table", { id: "grid" }, el("tr", {}, ...["Unit", "Measure", "Latest", "Target", "Score", "New value"].map((h) => el("th", { textContent: h }))),
    ...rows.map((r, i) => {
      const m = r.measure
      const tr = el("tr", {}, el("td", { textContent: r.unit }), el("td", {}, m.name, m.stale ? el("div", { className: "stale", textContent: "stale" }) : null),
        el("td", { className: "num", textContent: `${fmt(m.actual, 2)}${m.month ? ` (${m.month})` : ""}` }), el("td", { className: "num", textContent: m.target ? fmt(m.target.target, 2) : "—" }),
        el("td", { className: "num" }, el("span", { className: `dot ${m.color}` }), ` ${fmt(m.score)}`),
        el("td", {}, el("input", { name: `value-${m.id}`, type: "number", step: "any", ariaLabel: `New value for ${m.name}` })))
      tr.dataset.measure = m.id
      return tr
    }))
  const form = el("form", { className: "grid-form" }, el("div", { className: "build" }, "Month ", month, el("button", { type: "submit", textContent: "Save all" })), error, table)
  form.addEventListener("submit", async (e) => {
    e.preventDefault()
    error.textContent = ""
    const values = rows.map((r) => ({ measureId: r.measure.id, field: form.querySelector(`input[name="value-${r.measure.id}"]`) })).filter((x) => x.field.value !== "")
    try {
      await post("/api/actuals/batch", { rows: values.map((x) => ({ measureId: x.measureId, month: month.value, value: Number(x.field.value) })) })
      form.reset()
      await refresh()
    } catch (err) {
      error.textContent = (err.body?.rows ?? []).map((r) => `row ${r.row}: ${r.message}`).join(" ") || err.message
    }
  })
  replaceContent(head, form)
}

/** Incentive plans with each participant's payout, and a simulator that pays a what-if on the plan's curve. */
function renderIncentives(plans) {
  const company = units.find((u) => u.parentId == null)?.id
  const own = !(company != null && holds(company, "admin"))
  const sections = [el("div", { className: "card-head" }, el("h1", { textContent: "Incentives" }), el("span", { className: "muted", textContent: "payouts from the scores, frozen when the period is locked" }))]
  if (own) sections.push(el("p", { className: "muted", id: "own-payouts", textContent: "Only your own payouts are shown; the company's admins see everyone's." }))
  for (const plan of plans) {
    const box = el("div", { className: "announcement" })
    box.dataset.plan = plan.id
    box.append(el("div", { className: "objective-head" }, el("span", { className: "title", textContent: plan.name }),
      el("span", { className: "coverage", textContent: `curve: ${plan.curve.thresholdScore} pays ${plan.curve.thresholdPayout * 100}%, ${plan.curve.targetScore} pays ${plan.curve.targetPayout * 100}%, ${plan.curve.maximumScore} pays ${plan.curve.maximumPayout * 100}% (cap)` })))
    const names = new Map()
    box.append(el("table", {}, el("tr", {}, ...["Component", "Weight", "Score", "What if"].map((h) => el("th", { textContent: h }))),
      ...plan.components.map((c, i) => el("tr", {}, el("td", { textContent: c.id }), el("td", { className: "num", textContent: c.weight }), el("td", { className: "num", textContent: fmt(c.score) }),
        el("td", {}, el("input", { name: `score-${i}`, type: "number", step: "any", defaultValue: c.score === null ? "" : String(Math.round(c.score * 10) / 10), ariaLabel: `What-if score for ${c.id}` }))))))
    box.append(el("table", { className: "payouts" }, el("tr", {}, ...["Participant", "Target incentive", "Payout", "Amount", ""].map((h) => el("th", { textContent: h }))),
      ...plan.participants.map((p) => el("tr", {}, el("td", { textContent: p.name }), el("td", { className: "num", textContent: money(p.targetIncentive) }),
        el("td", { className: "num", textContent: `${fmt(p.payoutFraction * 100)}%` }), el("td", { className: "num amount", textContent: money(p.amount) }), el("td", { textContent: p.frozen ? "frozen" : "live" })))))
    const result = el("span", { className: "simulated" })
    const simulate = el("button", { type: "button", textContent: "Simulate" })
    simulate.addEventListener("click", async () => {
      const components = plan.components.map((c, i) => {
        const v = box.querySelector(`input[name="score-${i}"]`).value
        return { id: c.id, weight: c.weight, score: v === "" ? null : Number(v) }
      })
      const target = plan.participants[0]?.targetIncentive ?? 10000
      const r = await post("/api/incentives/simulate", { curve: plan.curve, targetIncentive: target, components })
      result.textContent = `What if: ${fmt(r.payoutFraction * 100)}% of ${money(target)} = ${money(r.amount)}`
    })
    box.append(el("div", { className: "build" }, simulate, result))
    sections.push(box)
  }
  replaceContent(...sections)
}

function renderReviews(list) {
  const head = el("div", { className: "card-head" }, el("h1", { textContent: "Reviews" }), el("span", { className: "muted", textContent: "monthly operational and quarterly strategy reviews" }))
  const table = el("table", { id: "review-list" }, el("tr", {}, ...["Day", "Review", "Status"].map((h) => el("th", { textContent: h }))),
    ...list.map((r) => {
      const tr = el("tr", {}, el("td", { className: "num", textContent: r.scheduledFor }), el("td", {}, el("a", { href: `#review-${r.id}`, textContent: r.title })), el("td", { textContent: r.status }))
      tr.dataset.review = r.id
      tr.dataset.status = r.status
      return tr
    }))
  replaceContent(head, table)
}

// The meeting: its state is loaded once, then kept by following the review's durable stream from its start; every
// event is applied by id, so replaying what the snapshot already holds changes nothing.
let meeting = null
function applyMeetingEvent(state, entry) {
  const d = entry.details ?? {}
  switch (entry.action) {
    case "review.scheduled":
    case "review.started":
      if (d.agenda?.length) state.agenda = d.agenda
      if (entry.action === "review.started") { state.review.status = "live"; state.review.currentItemId = d.currentItemId }
      break
    case "review.current": state.review.currentItemId = d.currentItemId; break
    case "review.closed": state.review.status = "closed"; state.review.currentItemId = null; break
    case "decision.recorded": state.decisions.set(d.decision.id, d.decision); break
    case "action.created": state.actions.set(d.action.id, { ...d.action, ownerName: d.ownerName }); break
    case "action.done": { const a = state.actions.get(d.actionId); if (a) a.doneOn = entry.at.slice(0, 10); break }
  }
}

function followMeeting(id) {
  meeting?.source?.close()
  const state = { id, review: null, agenda: [], decisions: new Map(), actions: new Map(), source: null }
  meeting = state
  api(`/api/reviews/${id}`).then((snapshot) => {
    if (meeting !== state) return
    state.review = snapshot.review
    state.agenda = snapshot.agenda
    for (const d of snapshot.decisions) state.decisions.set(d.id, d)
    for (const a of snapshot.actions) state.actions.set(a.id, { ...a, ownerName: people.get(a.ownerId)?.name })
    renderMeeting(state)
    state.source = new EventSource(`/v1/stream/${snapshot.stream}?offset=-1&live=sse`)
    // Whether the meeting is followed live right now, shown on its status pill (data-following). Only the pill changes:
    // a redraw would lose a decision or action being typed.
    const following = (on) => {
      state.following = on
      if (meeting === state) document.getElementById("review-status")?.toggleAttribute("data-following", on)
    }
    state.source.addEventListener("open", () => following(true))
    state.source.addEventListener("error", () => following(false))
    state.source.addEventListener("data", (e) => {
      for (const entry of JSON.parse(e.data)) applyMeetingEvent(state, entry)
      if (meeting === state) renderMeeting(state)
    })
  }, (err) => replaceContent(el("p", { className: "error", textContent: err.message })))
}

function renderMeeting(state) {
  const r = state.review
  const chair = canOwn(r.unitId)
  const member = canUpdate(r.unitId)
  const live = r.status === "live"
  const status = el("span", { className: `pill ${live ? "live" : ""}`, id: "review-status", textContent: r.status })
  if (state.following) status.setAttribute("data-following", "")
  const head = el("div", { className: "card-head" }, el("h1", { textContent: r.title }), status)
  const controls = el("div", { className: "build" })
  if (chair && r.status === "planned") controls.append(button("Start the meeting", () => post(`/api/reviews/${r.id}/start`, {})))
  if (chair && live) controls.append(button("Close the meeting", () => post(`/api/reviews/${r.id}/close`, {})))
  const current = state.agenda.find((a) => a.id === r.currentItemId)
  const agenda = el("ol", { id: "agenda" }, ...state.agenda.map((a) => {
    const li = el("li", { className: a.id === r.currentItemId ? "current-item" : "" }, el("span", { className: `kind ${a.reason}`, textContent: a.reason.replace("-", " ") }), ` ${a.title} `)
    li.dataset.item = a.id
    if (chair && live && a.id !== r.currentItemId) li.append(button("Discuss", () => post(`/api/reviews/${r.id}/current`, { itemId: a.id }), "link"))
    return li
  }))
  const sections = [head, controls, el("div", { className: "perspective", textContent: "Now discussing" }),
    el("div", { className: "now", id: "current-item", textContent: current ? current.title : live ? "—" : "The meeting is not live." })]
  if (member && live && current) {
    sections.push(smallForm("build record-decision", [input("text", "Decision", { required: true })], "Record decision",
      (v) => post(`/api/reviews/${r.id}/decisions`, { text: v.text, agendaItemId: current.id })))
    sections.push(smallForm("build add-action", [
      input("text", "Action", { required: true }),
      select("ownerId", "Owner", [...people.values()].map((p) => [p.id, p.name])),
      input("due", "Due", { type: "date", required: true }),
    ], "Add action", (v) => post(`/api/reviews/${r.id}/actions`, { text: v.text, ownerId: Number(v.ownerId), due: v.due, agendaItemId: current.id })))
  }
  sections.push(el("div", { className: "perspective", textContent: "Agenda" }), agenda)
  sections.push(el("div", { className: "perspective", textContent: "Decisions" }), el("ul", { id: "decisions" }, ...[...state.decisions.values()].map((d) => {
    const li = el("li", { textContent: d.text })
    li.dataset.decision = d.id
    return li
  })))
  sections.push(el("div", { className: "perspective", textContent: "Actions" }), el("ul", { id: "actions" }, ...[...state.actions.values()].map((a) => {
    const li = el("li", { textContent: `${a.text} — ${a.ownerName ?? people.get(a.ownerId)?.name ?? a.ownerId}, due ${a.due}${a.doneOn ? ` (done ${a.doneOn})` : ""}` })
    li.dataset.action = a.id
    return li
  })))
  replaceContent(...sections)
}

function button(label, act, className = "") {
  const b = el("button", { type: "button", textContent: label, className })
  b.addEventListener("click", () => act().catch((e) => alert(e.body?.error?.message ?? e.message)))
  return b
}

let refreshing = null
let again = false
/** Reloads the scores; calls that arrive while one runs are folded into one more. */
async function refresh() {
  if (refreshing) { again = true; return refreshing }
  refreshing = (async () => {
    do {
      again = false
      const reviewId = Number(location.hash.match(/^#review-(\d+)$/)?.[1] ?? 0)
      if (reviewId) {
        units = await api("/api/units")
        renderUnits()
        // The meeting keeps itself current from its stream; only a different meeting is loaded afresh.
        if (meeting?.id !== reviewId) followMeeting(reviewId)
        continue
      }
      meeting?.source?.close()
      meeting = null
      if (location.hash === "#incentives") {
        const [list, plans] = await Promise.all([api("/api/units"), api("/api/incentives")])
        units = list
        renderUnits()
        renderIncentives(plans)
        continue
      }
      if (location.hash === "#my-updates") {
        const [list, rows] = await Promise.all([api("/api/units"), me ? api("/api/my-updates") : []])
        units = list
        renderUnits()
        renderMyUpdates(rows)
        continue
      }
      if (location.hash === "#strategy") {
        const [list, strategy, map, announcements] = await Promise.all([api("/api/units"), api("/api/strategy"), api("/api/strategy-map"), api("/api/announcements")])
        units = list
        renderUnits()
        renderStrategy(strategy, map, announcements)
        continue
      }
      if (location.hash === "#reviews") {
        const [list, reviews] = await Promise.all([api("/api/units"), all("/api/reviews?unit=1")])
        units = list
        renderUnits()
        renderReviews(reviews)
        continue
      }
      if (location.hash === "#budgets") {
        const [list, budgets] = await Promise.all([api("/api/units"), api("/api/budgets")])
        units = list
        renderUnits()
        renderBudgets(budgets)
        continue
      }
      const [list, card, health] = await Promise.all([api("/api/units"), api(`/api/scorecards/${unitId}`), api(`/api/health?unit=${unitId}`)])
      units = list
      const parent = card.unit.parentId
      const parentObjectives = parent != null && canOwn(unitId) ? (await api(`/api/scorecards/${parent}`)).objectives : []
      renderUnits()
      renderScorecard(card, health, parentObjectives)
    } while (again)
  })().finally(() => { refreshing = null })
  return refreshing
}

function describe(entry) {
  const who = people.get(entry.actorId)?.name ?? `person ${entry.actorId}`
  const d = entry.details ?? {}
  if (entry.action === "actual.recorded") return `${who} recorded ${fmt(d.value, 2)} for ${d.month} on ${entry.subject}`
  if (entry.action === "objective.created") return `${who} added the objective "${d.name}"`
  if (entry.action === "measure.created") return `${who} added the measure "${d.name}"`
  if (entry.action === "target.set") return `${who} set the target of ${entry.subject}`
  if (entry.action === "allocation.made") return `${who} allocated ${money(d.amount)} from ${entry.subject} to initiative ${d.initiativeId}`
  if (entry.action === "spend.recorded") return `${who} recorded spend of ${money(d.amount)}`
  if (entry.action === "actuals.imported") return `${who} recorded ${d.rows} actuals (${d.source})`
  if (entry.action === "announcement.published") return `${who} published "${d.title}"`
  if (entry.action === "announcement.acknowledged") return `${who} acknowledged ${entry.subject}`
  if (entry.action === "announcement.reminded") return `${who} reminded ${d.pending} people of ${entry.subject}`
  if (entry.action === "decision.recorded") return `${who} recorded a decision: ${d.decision.text}`
  if (entry.action === "action.created") return `${who} added an action for ${d.ownerName}: ${d.action.text}`
  if (entry.action.startsWith("review.")) return `${who}: ${entry.action.replace(".", " ")} (${entry.subject})`
  if (entry.action.startsWith("release.")) return `${who}: ${entry.action.replace(".", " ")} of ${money(d.amount)} from ${entry.subject}`
  return `${who}: ${entry.action} ${entry.subject}`
}

/** A reminder sent to this person shows at the top of the page, with the way to the announcement, until dismissed. */
function remindMe(entry) {
  if (entry.action !== "announcement.reminded" || !me || !(entry.details?.personIds ?? []).includes(me.id)) return
  const who = people.get(entry.actorId)?.name ?? "An owner"
  const dismiss = el("button", { className: "link", textContent: "Dismiss" })
  dismiss.addEventListener("click", () => { $("notice").hidden = true })
  $("notice").replaceChildren(`${who} reminds you: an announcement waits for your acknowledgement. `, el("a", { href: "#strategy", textContent: "Read it" }), " ", dismiss)
  $("notice").hidden = false
}

/** Follows the audit stream live from now; each change refreshes the scores it may have moved. */
function follow() {
  const source = new EventSource("/v1/stream/strategy/audit?offset=now&live=sse")
  source.addEventListener("open", () => { $("live").textContent = "live"; $("live").className = "pill live"; refresh() })
  source.addEventListener("error", () => { $("live").textContent = "reconnecting"; $("live").className = "pill" })
  source.addEventListener("data", (e) => {
    const entries = JSON.parse(e.data)
    for (const entry of entries) {
      remindMe(entry)
      const li = el("li", {}, el("time", { textContent: new Date(entry.at).toLocaleTimeString() }), describe(entry))
      li.dataset.audit = entry.id
      $("feed").prepend(li)
    }
    refresh()
  })
}

/** The sign-in form: shown when the browser holds no valid sign-in; the demo lists its people to pick from. */
async function showSignIn() {
  $("sign-in").hidden = false
  document.querySelector("main").hidden = true
  const demo = await api("/api/demo/people").catch(() => null)
  if (demo) {
    $("demo-people").hidden = false
    $("demo-person").replaceChildren(el("option", { value: "", textContent: "—" }), ...demo.map((p) => el("option", { value: p.email, textContent: `${p.name}, ${p.unit}${p.roles.length ? ` (${p.roles.join(", ")})` : ""}` })))
    $("demo-person").addEventListener("change", () => { $("email").value = $("demo-person").value; $("password").value = "demo" })
  }
  $("sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault()
    $("sign-in-error").textContent = ""
    try {
      await api("/api/sign-in", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email: $("email").value, password: $("password").value }) })
      location.reload()
    } catch (err) {
      $("sign-in-error").textContent = err.message
    }
  })
}

async function start() {
  me = await api("/api/me").catch(() => null)
  if (!me) return showSignIn()
  $("signed-in").textContent = me.name
  $("sign-out").hidden = false
  $("sign-out").addEventListener("click", async () => { await api("/api/sign-out", { method: "POST" }).catch(() => null); location.reload() })
  const [list, strategy, periods] = await Promise.all([all("/api/people"), api("/api/strategy"), api("/api/periods")])
  people = new Map(list.map((p) => [p.id, p]))
  const active = periods.find((p) => p.status === "active")
  $("period").textContent = active ? `${active.name} (active)` : ""
  if (strategy.statement) {
    $("strategy").replaceChildren(el("div", { className: "vision", textContent: strategy.statement.vision }), el("div", { className: "muted", textContent: strategy.statement.mission }))
  }
  window.addEventListener("hashchange", () => { unitId = Number(location.hash.match(/^#unit-(\d+)$/)?.[1] ?? unitId); refresh() })
  await refresh()
  follow()
}

start()
