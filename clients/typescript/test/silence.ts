// Links that die without a word, for the tests of how clients notice them.
import { connect, createServer, type Socket } from "node:net"
import { expect } from "vitest"
import { type ClientOptions, DurableSessionsClient, type SessionState } from "../src/index"

/**
 * A TCP proxy to the server that can silence the connections it holds: from then on they carry nothing either way and
 * never close, as a link that died without a word. Connections made after that pass.
 */
export function silencingProxy(base: string): Promise<{ url: string; silence: () => void; connections: () => number; close: () => void }> {
  const target = new URL(base)
  const open: { silenced: boolean; sockets: Socket[] }[] = []
  let connections = 0
  const server = createServer((client) => {
    connections++
    const upstream = connect(Number(target.port), target.hostname)
    const pair = { silenced: false, sockets: [client, upstream] }
    open.push(pair)
    client.on("data", (chunk) => { if (!pair.silenced) upstream.write(chunk) })
    upstream.on("data", (chunk) => { if (!pair.silenced) client.write(chunk) })
    const end = () => { client.destroy(); upstream.destroy() }
    client.on("error", end).on("close", end)
    upstream.on("error", end).on("close", end)
  })
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({
      url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
      silence: () => { for (const pair of open) pair.silenced = true },
      connections: () => connections,
      close: () => { for (const pair of open) for (const socket of pair.sockets) socket.destroy(); server.close() },
    })))
}

/**
 * Joins a session and follows it until run r1 is finished, collecting the operations of the run events it sees. Returns
 * once the join is up to date over the socket, not only hydrated from the snapshot (which comes over HTTP before it opens).
 */
export async function followUntilRunFinished(client: DurableSessionsClient, id: string, signal: AbortSignal) {
  let joined!: () => void
  const ready = new Promise<void>((resolve) => (joined = resolve))
  const runEvents: string[] = []
  const follower = (async () => {
    for await (const update of client.session(id).join(signal)) {
      runEvents.push(...update.events.filter((e) => e.type === "run").map((e) => e.headers.operation!))
      if (update.upToDate) joined()
      if (update.upToDate && (update.state as SessionState).get("run", "r1")?.status === "finished") return update.state as SessionState
    }
    throw new Error("session ended")
  })()
  await Promise.race([ready, follower])
  return { follower, runEvents }
}

/** Starts and finishes run r1 of session `id` over HTTP straight to the server (not through any proxy). */
export async function writeRun(base: string, id: string, producer: string) {
  let seq = 0
  for (const operation of ["insert", "update"] as const) {
    const response = await fetch(`${base}/v1/stream/sessions/${id}`, {
      method: "POST",
      headers: { "content-type": "application/json", "producer-id": producer, "producer-epoch": "0", "producer-seq": String(seq++) },
      body: JSON.stringify([{ type: "run", key: "r1", value: { id: "r1", agent: "agent:ts", messageId: "m1", status: operation === "insert" ? "started" : "finished" }, headers: { operation } }]),
    })
    expect(response.status).toBe(200)
  }
}

/**
 * Waits for a follower of `followUntilRunFinished` to see run r1 finished after its link went silent, and checks it got
 * there on a new connection, each run event once, within `withinMs` of the silence.
 */
export async function expectResumed(
  followed: { follower: Promise<SessionState>; runEvents: string[] },
  connections: () => number,
  before: number,
  silencedAt: number,
  withinMs: number,
) {
  const state = await followed.follower
  expect(state.get("run", "r1")?.status).toBe("finished")
  expect(followed.runEvents).toEqual(["insert", "update"])
  expect(connections()).toBeGreaterThan(before)
  expect(Date.now() - silencedAt).toBeLessThan(withinMs)
}

/**
 * The whole silent-link scenario: a client with `options` follows a new session through a silencing proxy until it is
 * up to date; the link then goes silent without closing, and run r1 is written straight to the server. The follower
 * must see the run finished on a new connection, each run event once, within `withinMs` of the silence; the test gives
 * up after `limitMs`. The session is created elsewhere (straight to the server), so the follower's own snapshot read
 * leaves a pooled HTTP connection on the link, which goes silent with it: in Node, a reconnect may be sent on it.
 */
export async function expectResumedAfterSilence(base: string, options: Omit<ClientOptions, "baseUrl">, name: string, withinMs: number, limitMs: number) {
  const proxy = await silencingProxy(base)
  const client = new DurableSessionsClient({ ...options, baseUrl: proxy.url, reconnectDelayMs: 5, maxReconnectDelayMs: 50 })
  const id = `${name}-${Date.now()}`
  const abort = new AbortController()
  const timer = setTimeout(() => abort.abort(new Error("the follower never resumed")), limitMs)
  try {
    await new DurableSessionsClient({ baseUrl: base }).session(id).create()
    const followed = await followUntilRunFinished(client, id, abort.signal)
    const before = proxy.connections()

    // Nothing passes either way from now on, and nothing closes: only the client's own checks can tell. What is written
    // meanwhile (over HTTP, not through the proxy) must reach the follower on a new connection, once each.
    proxy.silence()
    const silenced = Date.now()
    await writeRun(base, id, `${name}-agent`)
    await expectResumed(followed, proxy.connections, before, silenced, withinMs)
  } finally {
    clearTimeout(timer)
    abort.abort()
    client.close()
    proxy.close()
  }
}
