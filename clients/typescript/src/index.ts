// Client for DurableSessions: join a session (snapshot + live tail over one shared WebSocket, SSE or long-poll), resume
// after any disconnect from the last offset (no gap, no duplicate), materialize the conversation, send messages, cancel
// and steer runs.

/** A State Protocol change or control message as it appears in a session stream. */
export interface SessionEvent {
  type?: string
  key?: string
  value?: Record<string, unknown> | null
  headers: { operation?: "insert" | "update" | "delete"; control?: string; offset?: string; timestamp?: string }
}

export interface ClientOptions {
  /** The server, e.g. `http://127.0.0.1:4437`. */
  baseUrl: string
  /**
   * A bearer token, when the server requires one; or a function that gives one, called on every connect and reconnect
   * (and once more after a 401). The server ends a live read when its token expires; the client then reconnects from
   * its offset with the function's next token, so a tail outlives any number of short-lived tokens and loses nothing.
   * Over the WebSocket, a function's next token replaces a JWT's on the open socket before it expires (a quarter of its
   * remaining life, at most a minute, ahead), so the socket and every subscription on it stay open.
   */
  token?: string | (() => string | undefined | Promise<string | undefined>)
  /** The participant id this client writes as. */
  participantId?: string
  /**
   * First reconnect delay in ms (doubled per failure, with jitter). It starts over only after a read that delivered and
   * stayed up for a second: a server or proxy that drops every connection right after its first update gets ever longer
   * waits, not a reconnect every `reconnectDelayMs`. Default 100.
   */
  reconnectDelayMs?: number
  /** Longest reconnect delay in ms. Default 5000. */
  maxReconnectDelayMs?: number
  /**
   * Where to keep each joined session's materialized state together with its offset (e.g. `sessionStorage` or
   * `localStorage`), so a reload resumes the live tail from that offset instead of hydrating from the snapshot again.
   */
  storage?: Pick<Storage, "getItem" | "setItem" | "removeItem">
  /**
   * How to follow the live tail: `websocket`, `sse`, `long-poll`, or `auto` (the default): one WebSocket per client for
   * every session it follows (docs/websocket.md), falling back to SSE and then to long-poll when one fails three times
   * in a row without delivering anything (WebSockets blocked, a proxy that buffers SSE), and trying the first again after
   * `transportRetryMs`. Without a
   * `WebSocket` global (Node before 22 without `--experimental-websocket`), `auto` starts with SSE.
   */
  transport?: "auto" | "websocket" | "sse" | "long-poll"
  /**
   * How long a join of `auto` stays on a transport it fell back to before it tries the first one again, in ms: an
   * outage of the server (a restart, a deploy) fails every transport alike, and must not leave every page on long-poll
   * for good. Tried at the next update after this long; if it fails three times again, the join falls back as before
   * and waits twice as long before the next try (at most an hour). Default 60000.
   */
  transportRetryMs?: number
  /**
   * How long a session operation waits for its answer, in ms. Past it the operation fails (it may or may not have been
   * applied, as with a cut connection). Over the WebSocket the socket is then dropped, so every session following over
   * it resumes on a new one: a socket can die without a close event, and a browser cannot ping. Over HTTP each attempt of
   * a request (a message, a control, creating a session), the reading of its answer included, is aborted after as long.
   * Default 30000.
   */
  operationTimeoutMs?: number
  /**
   * How long the shared WebSocket may stay silent while sessions follow over it or operations wait on it, in ms. Past it
   * the client sends a `ping`; a socket that then answers nothing for as long again is dropped, and every session on it
   * resumes on a new one. A browser cannot send WebSocket pings of its own, and a link that died without a close (a
   * phone changing networks, a NAT that forgot the connection) would otherwise hold a follower that sends nothing
   * forever. A dead socket is noticed within about two and a half times this. The server answers a ping in turn with
   * the socket's other messages, so a socket kept busy by slow operations can go unanswered for a while: raise this
   * together with `operationTimeoutMs`. The first socket opened after one was dropped so is given up if the server has
   * not greeted it within twice this (at most 10 s; otherwise 10 s), and the sessions retry on another: in Node, that
   * open may be sent on a pooled connection of the same dead link. Default 15000.
   */
  keepAliveMs?: number
  /**
   * How long a live read over SSE or long-poll, or the snapshot a join starts from, may wait on the network without
   * hearing anything (no event, none of the server's keep-alive comments, no answer to a poll, no more of the snapshot)
   * before it is taken for dead and asked for again (a read from its offset) on a new request, in ms. A link that died without a close would otherwise hold the read forever. Only time spent waiting on
   * the network counts, not time the page takes over an update. Keep it above the server's SSE keep-alive interval
   * (15 s by default) and long-poll timeout (30 s by default). Default 45000.
   */
  idleTimeoutMs?: number
}

export type ConnectionState = "connecting" | "catching-up" | "live" | "reconnecting"

/** What `join` delivers: every event is applied together with the offset that follows it. */
type Batch = { events: SessionEvent[]; offset: string; upToDate: boolean; closed: boolean }

/** The materialized state of a session: entities by type and key, deltas rolled into their message. */
export class SessionState {
  // A Map keeps its keys in order of insertion, and an update keeps its key's place: the session's order of first
  // insertion, with a delete costing no more than a lookup (an edit of an early message deletes every later one at once).
  private readonly entities = new Map<string, Record<string, unknown>>()

  /** Applies one event (State Protocol semantics; `delta` text is appended to its message part). */
  apply(event: SessionEvent): void {
    if (event.headers?.control === "reset") {
      this.entities.clear()
      return
    }
    const { type, key } = event
    const operation = event.headers?.operation
    if (!type || key === undefined || !operation) return
    if (type === "delta") {
      if (operation === "insert" && event.value) this.applyDelta(event.value)
      return
    }
    const id = `${type}\u0000${key}`
    if (operation === "delete") {
      this.entities.delete(id)
    } else if (event.value && typeof event.value === "object") {
      this.entities.set(id, structuredClone(event.value))
    }
  }

  get(type: string, key: string): Record<string, unknown> | undefined {
    return this.entities.get(`${type}\u0000${key}`)
  }

  all(type: string): Record<string, unknown>[] {
    const prefix = `${type}\u0000`
    const found: Record<string, unknown>[] = []
    for (const [id, value] of this.entities) if (id.startsWith(prefix)) found.push(value)
    return found
  }

  /** A stable JSON form of the state, for comparing two clients and for `fromJSON`. */
  toJSON(): [string, Record<string, unknown>][] {
    return [...this.entities]
  }

  /** Restores a state saved with `toJSON`. */
  static fromJSON(entries: [string, Record<string, unknown>][]): SessionState {
    const state = new SessionState()
    for (const [id, value] of entries) state.entities.set(id, value)
    return state
  }

  private applyDelta(delta: Record<string, unknown>): void {
    const message = this.get("message", String(delta.messageId))
    if (!message) return
    const parts = (Array.isArray(message.parts) ? message.parts : (message.parts = [])) as Record<string, unknown>[]
    const index = typeof delta.part === "number" ? delta.part : 0
    while (parts.length <= index) parts.push({ type: typeof delta.partType === "string" ? delta.partType : "text", text: "" })
    const part = parts[index]!
    part.text = String(part.text ?? "") + String(delta.text ?? "")
  }
}

export interface SessionUpdate {
  state: SessionState
  events: SessionEvent[]
  offset: string
  upToDate: boolean
}

/** Thrown for a request the server refused (4xx). */
export class DurableSessionsError extends Error {
  /**
   * @param retryAfterMs How long the server asked to wait before trying again (its `Retry-After`, in ms), when it said.
   */
  constructor(readonly status: number, readonly code: string, message: string, readonly retryAfterMs?: number) {
    super(message)
  }
}

export class DurableSessionsClient {
  readonly participantId: string
  private readonly base: string
  private hub: SocketHub | undefined

  constructor(private readonly options: ClientOptions) {
    this.base = options.baseUrl.replace(/\/$/, "")
    // setTimeout takes at most 2^31-1 ms; a longer timeout would fire at once.
    for (const name of ["operationTimeoutMs", "keepAliveMs", "idleTimeoutMs", "transportRetryMs"] as const) {
      const value = options[name]
      if (value !== undefined && !(value > 0 && value <= 2 ** 31 - 1)) {
        throw new Error(`${name} must be a number of milliseconds from 1 to 2147483647, not ${value}`)
      }
    }
    this.participantId = options.participantId ?? `client:${Math.random().toString(36).slice(2, 10)}`
  }

  session(id: string): SessionClient {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(id)) throw new Error(`invalid session id: ${id}`)
    return new SessionClient(this, id)
  }

  /**
   * @internal Sends a request. Without a `signal` of the caller's own to end it, each attempt, and the reading of the
   * answer it gets, is given `operationTimeoutMs`: a link that died without a close would otherwise hold it forever. A
   * live read or a snapshot passes a signal that its idle watch ends.
   */
  async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const timeoutMs = this.options.operationTimeoutMs ?? 30_000
    const send = async () => {
      const headers: Record<string, string> = {}
      const token = typeof this.options.token === "function" ? await this.options.token() : this.options.token
      // Counted from here: the time a token function takes is not the server's.
      const deadline = signal ? undefined : timeoutSignal(timeoutMs)
      if (token) headers.authorization = `Bearer ${token}`
      if (body !== undefined) headers["content-type"] = "application/json"
      const init: RequestInit = { method, headers }
      if (body !== undefined) init.body = JSON.stringify(body)
      const ends = signal ?? deadline
      if (ends) init.signal = ends
      try {
        return await fetch(`${this.base}${path}`, init)
      } catch (error) {
        if (deadline?.aborted) throw new Error(`The server did not answer ${method} ${path} within ${timeoutMs} ms (operationTimeoutMs); it may or may not have been applied.`)
        throw error
      }
    }
    let response = await send()
    // A token that expired on its way: ask the function for the next one, once.
    if (response.status === 401 && typeof this.options.token === "function") {
      await response.body?.cancel()
      response = await send()
    }
    // Other nodes kept the session busy, or the server had too many large appends, and nothing was written (503
    // SESSION_BUSY, SERVER_BUSY): sent again, a few times. Another 503 (the store away) may have stored the request, so
    // it is not sent again.
    for (let attempt = 0; attempt < 5 && response.status === 503 && ["SESSION_BUSY", "SERVER_BUSY"].includes((await errorCode(response)) ?? ""); attempt++) {
      const asked = retryAfterHeader(response)
      await response.body?.cancel()
      // A busy server's own wait, not a reconnect's: the browser coming back online does not cut it short.
      await backoff(Math.min(10_000, asked !== undefined && asked > 0 ? asked : 100) * 2, signal, { endsOnline: false })
      response = await send()
    }
    if (response.status >= 400) {
      let code = `HTTP_${response.status}`
      let message = `The server answered ${response.status}.`
      try {
        const error = (await response.json()) as { error?: { code?: string; message?: string } }
        code = error.error?.code ?? code
        message = error.error?.message ?? message
      } catch {
        // not a JSON error body
      }
      // A refusal is final; a server error (503 SESSION_BUSY, a proxy's 502) is worth another try, as over the
      // WebSocket, where it fails the operation with a plain Error too. Either way nothing is taken for an answer.
      if (response.status < 500) throw new DurableSessionsError(response.status, code, message, retryAfterHeader(response))
      throw new Error(`${code}: ${message}`)
    }
    return response
  }

  /**
   * @internal Runs a session operation over the client's WebSocket when the client uses one and it opens, else over
   * HTTP. Falling back is safe only before anything was sent: an operation whose socket drops before its answer fails,
   * as a POST cut mid-flight does, and is not repeated.
   */
  async operate(op: string, session: string, target: { run?: string; message?: string }, rest: string, body: unknown): Promise<unknown> {
    const transport = this.options.transport ?? "auto"
    if ((transport === "auto" || transport === "websocket") && typeof WebSocket !== "undefined" && this.sockets.available) {
      let answer = await this.sockets.call({ op, session, ...target, body })
      // Busy, and nothing was written (503 SESSION_BUSY, SERVER_BUSY): sent again a few times, as over HTTP.
      for (let attempt = 0; attempt < 5 && answer && answer.status === 503 && ["SESSION_BUSY", "SERVER_BUSY"].includes(codeOf(answer.body) ?? ""); attempt++) {
        await backoff(200 * 2 ** attempt, undefined, { endsOnline: false })
        answer = await this.sockets.call({ op, session, ...target, body })
      }
      if (answer) {
        if (answer.status >= 400) {
          const code = codeOf(answer.body) ?? `HTTP_${answer.status}`
          const message = (answer.body as { error?: { message?: string } } | undefined)?.error?.message ?? `The server answered ${answer.status}.`
          if (answer.status < 500) throw new DurableSessionsError(answer.status, code, message)
          throw new Error(`${code}: ${message}`)
        }
        return answer.body
      }
    }
    const response = await this.request("POST", `/v1/sessions/${session}/${rest}`, body)
    try {
      return await response.json()
    } catch (error) {
      // The answer's body stopped coming within the request's deadline: said as a request that got no answer is.
      if ((error as { name?: string } | undefined)?.name === "TimeoutError") {
        throw new Error(`The server did not finish answering POST /v1/sessions/${session}/${rest} within ${this.options.operationTimeoutMs ?? 30_000} ms (operationTimeoutMs); it may or may not have been applied.`)
      }
      throw error
    }
  }

  /** @internal The client's one WebSocket, shared by every session it follows. */
  get sockets(): SocketHub {
    this.hub ??= new SocketHub(
      this.base,
      async () => (typeof this.options.token === "function" ? await this.options.token() : this.options.token),
      this.options.operationTimeoutMs ?? 30_000,
      this.options.keepAliveMs ?? 15_000,
      typeof this.options.token === "function",
    )
    return this.hub
  }

  /**
   * Closes the client's WebSocket, if it opened one. Sessions joined over it see their connection drop and resume on a
   * new socket, as after any cut: to end them, abort the signals they were joined with (and then close the client).
   */
  close(): void {
    this.hub?.close()
    this.hub = undefined
  }

  /** @internal */
  get settings(): Required<Pick<ClientOptions, "reconnectDelayMs" | "maxReconnectDelayMs" | "idleTimeoutMs" | "transportRetryMs">> & ClientOptions {
    const o = this.options
    return {
      ...o,
      reconnectDelayMs: o.reconnectDelayMs ?? 100,
      maxReconnectDelayMs: o.maxReconnectDelayMs ?? 5000,
      idleTimeoutMs: o.idleTimeoutMs ?? 45_000,
      transportRetryMs: o.transportRetryMs ?? 60_000,
    }
  }

  /**
   * @internal Whether a refusal of a live read or snapshot is worth another try with backoff rather than the end of the
   * join: a rate limit or a timeout (429, 408), and a 401 when the token comes from a function, whose next token may be
   * valid (the identity provider was away, or the clocks disagree for a while).
   */
  retries(error: DurableSessionsError): boolean {
    return error.status === 408 || error.status === 429 || (error.status === 401 && typeof this.options.token === "function")
  }
}

/** Options of a message, cancel, steer or regenerate. */
export interface OperationOptions {
  /**
   * The message's or control's id: 1-128 letters, digits, `-`, `_` or `.`. Sent again with the same id after an error
   * whose outcome is unknown (a dropped connection), the operation is answered as the first time and applied once.
   * The server chooses one when it is left out.
   */
  id?: string
}

export class SessionClient {
  constructor(private readonly client: DurableSessionsClient, readonly id: string) {}

  async create(settings: { newMessagePolicy?: "queue" | "interrupt" | "reject"; title?: string } = {}): Promise<void> {
    await this.client.request("PUT", `/v1/sessions/${this.id}`, settings)
  }

  /**
   * Sends a message. Like `cancel`, `steer` and `heartbeat` it goes over the client's WebSocket when the client uses
   * one (the same endpoint, rules and answer as over HTTP), and over HTTP otherwise.
   */
  async sendMessage(text: string, role: "user" | "assistant" = "user", options: OperationOptions = {}): Promise<string> {
    const body = { text, role, author: this.client.participantId, ...(options.id === undefined ? {} : { id: options.id }) }
    return ((await this.client.operate("session.message", this.id, {}, "messages", body)) as { messageId: string }).messageId
  }

  /**
   * Cancels a running run; the returned offset is the fence after which nothing more is accepted for it. Sent again
   * with the same `options.id`, it is acknowledged again even though the run has ended since.
   */
  async cancel(runId: string, options: OperationOptions = {}): Promise<{ controlId: string; offset: string }> {
    const body = { by: this.client.participantId, ...(options.id === undefined ? {} : { id: options.id }) }
    return (await this.client.operate("session.cancel", this.id, { run: runId }, `runs/${runId}/cancel`, body)) as { controlId: string; offset: string }
  }

  /** Steers a running run with a new instruction; sent again with the same `options.id`, it steers once. */
  async steer(runId: string, text: string, options: OperationOptions = {}): Promise<{ controlId: string; offset: string }> {
    const body = { by: this.client.participantId, text, ...(options.id === undefined ? {} : { id: options.id }) }
    return (await this.client.operate("session.steer", this.id, { run: runId }, `runs/${runId}/steer`, body)) as { controlId: string; offset: string }
  }

  /**
   * Asks for a reply to be written again: the agent that wrote it answers its message anew, in the same message, which
   * starts again from empty (a reply still being written is cancelled first). `messageId` is the reply, or the user
   * message it answers; only the reply to the session's latest user message can be written again. Sent again with the
   * same `options.id`, it is applied once.
   */
  async regenerate(messageId: string, options: OperationOptions = {}): Promise<{ controlId: string; offset: string }> {
    const body = { by: this.client.participantId, ...(options.id === undefined ? {} : { id: options.id }) }
    return (await this.client.operate("session.regenerate", this.id, { message: messageId }, `messages/${messageId}/regenerate`, body)) as { controlId: string; offset: string }
  }

  /**
   * Edits one of this client's messages: its text is replaced, and every agent's reply to it is written again, in place,
   * from the new text (a reply still being written is cancelled first). An earlier message takes the conversation after
   * it out of the session (its later messages are deleted); with another participant's message among them, the edit is
   * refused (409 `NOT_LATEST_MESSAGE`).
   */
  async edit(messageId: string, text: string): Promise<{ messageId: string; offset: string }> {
    const body = { text, author: this.client.participantId }
    return (await this.client.operate("session.edit", this.id, { message: messageId }, `messages/${messageId}/edit`, body)) as { messageId: string; offset: string }
  }

  async heartbeat(kind: "client" | "human" = "client", name?: string): Promise<number> {
    const body = { participantId: this.client.participantId, kind, name }
    return ((await this.client.operate("session.presence", this.id, {}, "presence", body)) as { timeoutMs: number }).timeoutMs
  }

  async leave(): Promise<void> {
    await this.client.request("DELETE", `/v1/sessions/${this.id}/presence/${encodeURIComponent(this.client.participantId)}`)
  }

  async takeControl(): Promise<void> {
    await this.client.request("POST", `/v1/sessions/${this.id}/handoff`, { holder: this.client.participantId })
  }

  async returnControl(): Promise<void> {
    await this.client.request("DELETE", `/v1/sessions/${this.id}/handoff`, { holder: this.client.participantId })
  }

  /**
   * Joins the session: hydrates from the snapshot (or from the state `storage` kept, resuming at its offset), then
   * follows the live tail, reconnecting with backoff after any failure and resuming from the last offset it delivered.
   * Events are delivered only together with the offset that follows them, so a connection cut mid-event never yields a
   * partial or repeated batch.
   */
  async *join(signal?: AbortSignal, onState?: (state: ConnectionState, cause?: unknown) => void): AsyncGenerator<SessionUpdate> {
    const settings = this.client.settings
    const key = `durable-sessions:${this.id}`
    let delay = settings.reconnectDelayMs
    onState?.("connecting")

    let state: SessionState
    let offset: string
    const saved = restore(settings.storage?.getItem(key))
    if (saved) {
      ;({ state, offset } = saved)
    } else {
      // Hydrate: the snapshot (retried until a complete one arrives). One that hears nothing for idleTimeoutMs, before
      // its answer or in the middle of its body, is taken for a dead link and asked for again.
      for (;;) {
        const idle = idleWatch(settings.idleTimeoutMs, signal)
        try {
          idle.waiting()
          const response = await this.client.request("GET", `/v1/sessions/${this.id}`, undefined, idle.signal)
          idle.heard()
          if (!response.body) throw new Error(`the snapshot answered ${response.status} without a body`)
          const snapshot = JSON.parse(await readText(response.body, idle)) as SessionEvent[]
          offset = response.headers.get("Stream-Next-Offset")!
          state = new SessionState()
          for (const event of snapshot) state.apply(event)
          break
        } catch (error) {
          if ((error instanceof DurableSessionsError && !this.client.retries(error)) || signal?.aborted) throw error
          onState?.("connecting", error)
          await backoff(delay, signal, { atLeastMs: retryAfterOf(error) })
          delay = Math.min(settings.maxReconnectDelayMs, delay * 2)
        } finally {
          idle.dispose()
        }
      }
    }
    const persist = throttledSave(settings.storage, key)
    try {
      persist.now(state, offset)
      yield { state, events: [], offset, upToDate: false }

      onState?.("catching-up")
      const order: Transport[] = settings.transport === "websocket" ? ["websocket"]
        : settings.transport === "sse" ? ["sse"]
        : settings.transport === "long-poll" ? ["long-poll"]
        : typeof WebSocket === "undefined" ? ["sse", "long-poll"] : ["websocket", "sse", "long-poll"]
      let transport: Transport = order[0]!
      let silentFailures = 0
      // When the join fell back from its first transport: after retryAfter it tries that one again (`retrying`), and
      // when that fails again, falls back as before and waits twice as long before the next try.
      let fellBackAt: number | undefined
      let retryAfter = settings.transportRetryMs
      let retrying = false
      // 401s in a row from a token function: its tokens keep being refused, which the app must hear of.
      let refusedTokens = 0
      let resuming = saved !== undefined
      for (;;) {
        let delivered = false
        let cause: unknown
        let firstDeliveredAt: number | undefined
        try {
          const batches = transport === "websocket" ? this.client.sockets.follow(`sessions/${this.id}`, offset, signal)
            : transport === "sse" ? this.readSse(offset, signal)
            : this.readLongPoll(offset, signal)
          for await (const batch of batches) {
            for (const e of batch.events) state.apply(e)
            offset = batch.offset
            delivered = true
            firstDeliveredAt ??= Date.now()
            resuming = false
            silentFailures = 0
            persist.soon(state, offset)
            onState?.(batch.upToDate ? "live" : "catching-up")
            yield { state, events: batch.events, offset, upToDate: batch.upToDate }
            refusedTokens = 0
            if (transport === order[0]) {
              retrying = false
              retryAfter = settings.transportRetryMs
            }
            if (batch.closed) return
            if (fellBackAt !== undefined && Date.now() - fellBackAt >= retryAfter) {
              // Long enough on the fallback: the first transport again, from the offset just delivered.
              retrying = true
              transport = order[0]!
              silentFailures = 0
              fellBackAt = undefined
              break
            }
          }
        } catch (error) {
          if (signal?.aborted) throw error
          cause = error
          if (error instanceof DurableSessionsError && error.status === 401 && this.client.retries(error) && ++refusedTokens >= 5) throw error
          if (error instanceof DurableSessionsError && this.client.retries(error)) {
            // Refused for now (a rate limit, a token), not for the transport: it does not count towards falling back.
            // The server's Retry-After is waited out, whatever the browser says of being online.
            onState?.("reconnecting", error)
            await backoff(delay, signal, { atLeastMs: error.retryAfterMs, endsOnline: error.retryAfterMs === undefined })
            delay = Math.min(settings.maxReconnectDelayMs, delay * 2)
            continue
          }
          if (error instanceof DurableSessionsError) {
            if (!resuming || error.status === 401 || error.status === 403) throw error
            // The stored offset is no longer valid here (the session was deleted, expired or recreated): forget it
            // and join again from the snapshot.
            settings.storage?.removeItem(key)
            persist.dispose()
            yield* this.join(signal, onState)
            return
          }
        }
        // A transport that fails three times in a row without delivering anything gives way to the next one.
        // Failures while the browser is offline say nothing about the transport.
        if (!delivered && globalThis.navigator?.onLine !== false && ++silentFailures >= 3 && order.indexOf(transport) < order.length - 1) {
          if (transport === order[0] && retrying) {
            // The first transport failed again: the next try waits twice as long.
            retryAfter = Math.min(3_600_000, retryAfter * 2)
            retrying = false
          }
          transport = order[order.indexOf(transport) + 1]!
          silentFailures = 0
          fellBackAt ??= Date.now()
        }
        // Only a read that delivered and stayed up a while starts the backoff over: one cut right after its first update
        // (a proxy or server that drops every connection) keeps doubling it, instead of reconnecting at the shortest delay.
        if (firstDeliveredAt !== undefined && Date.now() - firstDeliveredAt >= STABLE_READ_MS) delay = settings.reconnectDelayMs
        onState?.("reconnecting", cause)
        await backoff(delay, signal)
        delay = Math.min(settings.maxReconnectDelayMs, delay * 2)
      }
    } finally {
      persist.dispose()
    }
  }

  private async *readSse(offset: string, signal?: AbortSignal): AsyncGenerator<Batch> {
    const idle = idleWatch(this.client.settings.idleTimeoutMs, signal)
    try {
      idle.waiting()
      const response = await this.client.request("GET", `/v1/stream/sessions/${this.id}?offset=${encodeURIComponent(offset)}&live=sse`, undefined, idle.signal)
      idle.heard()
      if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`)
      let pending: SessionEvent[] = []
      let pendingLength = 0
      for await (const { event, data } of readSse(response.body, idle)) {
        if (event === "data") {
          // Data events are held until their control event: bounded together, as one event is.
          pendingLength += data.length
          if (pendingLength > MAX_SSE_EVENT_LENGTH) throw new Error(`data events without a control event are longer than ${MAX_SSE_EVENT_LENGTH} characters`)
          pending.push(...(JSON.parse(data) as SessionEvent[]))
        } else if (event === "control") {
          const control = JSON.parse(data) as { streamNextOffset: string; upToDate?: boolean; streamClosed?: boolean }
          const closed = control.streamClosed === true
          yield { events: pending, offset: control.streamNextOffset, upToDate: control.upToDate === true || closed, closed }
          pending = []
          pendingLength = 0
        }
      }
    } finally {
      idle.dispose()
    }
  }

  private async *readLongPoll(offset: string, signal?: AbortSignal): AsyncGenerator<Batch> {
    const settings = this.client.settings
    let cursor: string | null = null
    // The wait before the next poll after one answered at once with nothing (see below).
    let pause = settings.reconnectDelayMs
    for (;;) {
      const sentAt = Date.now()
      const query = `offset=${encodeURIComponent(offset)}&live=long-poll${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`
      // Each poll is answered within the server's long-poll timeout: one that hears nothing for longer is dead.
      const idle = idleWatch(this.client.settings.idleTimeoutMs, signal)
      let response: Response
      let events: SessionEvent[]
      try {
        idle.waiting()
        response = await this.client.request("GET", `/v1/stream/sessions/${this.id}?${query}`, undefined, idle.signal)
        if (response.status !== 200 && response.status !== 204) throw new Error(`stream answered ${response.status}`)
        // The body is read completely before its offset is used: a cut mid-body throws and the poll is repeated.
        events = response.status === 200 ? ((await response.json()) as SessionEvent[]) : []
      } finally {
        idle.dispose()
      }
      const next = response.headers.get("Stream-Next-Offset")
      if (!next) throw new Error("stream answered without Stream-Next-Offset")
      cursor = response.headers.get("Stream-Cursor") ?? cursor
      const closed = response.headers.get("Stream-Closed") === "true"
      const moved = next !== offset
      offset = next
      yield { events, offset, upToDate: closed || response.headers.has("Stream-Up-To-Date"), closed }
      if (closed) return
      if (events.length === 0 && !moved && Date.now() - sentAt < HELD_POLL_MS) {
        // The server holds a poll until something arrives or its timeout passes. Nothing, at once, is a server or proxy
        // that does not hold polls: the next one waits, twice as long each time, rather than polling in a tight loop.
        await backoff(pause, signal)
        pause = Math.min(settings.maxReconnectDelayMs, pause * 2)
      } else {
        pause = settings.reconnectDelayMs
      }
    }
  }
}

type Transport = "websocket" | "sse" | "long-poll"

type SocketMessage = { type: string; sub?: string; id?: string; offset?: string; data?: SessionEvent[]; upToDate?: boolean; status?: number; code?: string; message?: string; body?: unknown }

/**
 * @internal One WebSocket (subprotocol `durable-streams.v1`) carrying the subscriptions of every session a client
 * follows: a page that watches many conversations holds one connection, not one per conversation. Opened on first use
 * and again after it drops; each subscription resumes from its own offset.
 */
export class SocketHub {
  private socket: WebSocket | undefined
  private opening: Promise<WebSocket> | undefined
  private readonly listeners = new Map<string, (message: SocketMessage, length: number) => void>()
  /**
   * @internal The most a subscription holds received but not yet taken by its reader, in characters of the messages'
   * text. Past it the subscription is dropped and its join resumes from the offset it delivered last, as the server
   * does with a subscriber that falls behind: a reader that stops pulling (a paused tab) is not buffered without bound
   * while the socket keeps being read for the other sessions on it.
   */
  maxQueuedLength = 16 * 1024 * 1024
  private next = 0
  private failedAt = Number.NEGATIVE_INFINITY
  // The largest message the server takes, from its hello (docs/websocket.md's least until then).
  private maxMessageBytes = 1024 * 1024
  private dropCurrent: (() => void) | undefined
  // Set when a socket is dropped as dead (silent, unanswered, or the page offline): the link it ran on may be dead too.
  private linkSuspect = false
  private readonly closed = new AbortController()

  /**
   * @param refreshes whether `token` may give a new token each call (the client was given a function): the socket's
   * token is then replaced before it expires, so the socket and its subscriptions outlive it.
   */
  constructor(
    private readonly base: string,
    private readonly token: () => Promise<string | undefined>,
    private readonly answerTimeoutMs = 30_000,
    private readonly keepAliveMs = 15_000,
    private readonly refreshes = false,
  ) {
    // A browser that goes offline may keep a dead socket open for a long time without a close event: drop it at once,
    // so every subscription resumes as soon as the network is back.
    globalThis.addEventListener?.("offline", () => this.dropCurrent?.(), { signal: this.closed.signal })
  }

  /** False for 30 s after the socket could not be opened, so operations go straight to HTTP meanwhile. */
  get available(): boolean {
    return Date.now() - this.failedAt > 30_000
  }

  /**
   * Sends one operation and waits for its answer (`response`, or `error` with the HTTP status and code). Resolves to
   * `undefined` when the socket cannot be opened, or the operation is larger than the server's largest message (it would
   * close the socket under every session on it): nothing was sent and the caller may use HTTP. Throws when the socket
   * drops after sending, or when no answer comes within the answer timeout (the socket is then dropped), since the
   * operation may then have been applied.
   */
  async call(operation: Record<string, unknown>): Promise<{ status: number; body: unknown } | undefined> {
    let socket: WebSocket
    try {
      socket = await this.open()
    } catch {
      return undefined
    }
    const id = `o${++this.next}`
    const text = JSON.stringify({ ...operation, id })
    if (text.length > this.maxMessageBytes / 3 && new TextEncoder().encode(text).length > this.maxMessageBytes) return undefined
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.listeners.delete(id)
        reject(new Error("the WebSocket did not answer the operation in time; it may or may not have been applied"))
        // A socket that answers nothing is taken for dead: its sessions resume on a new one.
        if (this.socket === socket) this.dropCurrent?.()
      }, this.answerTimeoutMs)
      this.listeners.set(id, (message) => {
        clearTimeout(timer)
        this.listeners.delete(id)
        if (message.type === "response") resolve({ status: message.status ?? 200, body: message.body })
        else if (message.type === "error") resolve({ status: message.status ?? 400, body: { error: { code: message.code, message: message.message } } })
        else reject(new Error("the WebSocket closed before the operation was answered; it may or may not have been applied"))
      })
      try {
        socket.send(text)
      } catch (error) {
        // Not sent (the socket closed meanwhile): nothing of it waits on.
        clearTimeout(timer)
        this.listeners.delete(id)
        reject(error)
      }
    })
  }

  /** Follows `path` from `offset`: batches of events, each with the offset after it. Throws when the connection drops. */
  async *follow(path: string, offset: string, signal?: AbortSignal): AsyncGenerator<Batch> {
    const socket = await this.open()
    // Aborted while the socket opened: the listener below would never hear it.
    signal?.throwIfAborted()
    const sub = `s${++this.next}`
    const queue: { message: SocketMessage; length: number }[] = []
    let queued = 0
    let dropped = false
    let wake: (() => void) | undefined
    this.listeners.set(sub, (message, length) => {
      // A subscription the server ended no longer waits on the socket, even before its reader takes the message.
      if (message.type === "closed" || message.type === "error" || message.type === "fell-behind" || message.type === "connection-lost") this.listeners.delete(sub)
      queued += length
      if (queued > this.maxQueuedLength && message.type === "data" && queue.length > 0) {
        // The reader is not taking what comes: what it has not taken is dropped, and the join resumes from the offset
        // it delivered last.
        dropped = true
        this.listeners.delete(sub)
        queue.length = 0
        queued = 0
        queue.push({ message: { type: "fell-behind" }, length: 0 })
        try {
          socket.send(JSON.stringify({ op: "unsubscribe", sub }))
        } catch {
          // Closing: nothing more comes for it anyway.
        }
      } else {
        queue.push({ message, length })
      }
      wake?.()
    })
    // An abort goes ahead of whatever is queued.
    const abort = () => { queue.unshift({ message: { type: "aborted" }, length: 0 }); wake?.() }
    signal?.addEventListener("abort", abort)
    let ended = false
    try {
      socket.send(JSON.stringify({ op: "subscribe", sub, path, offset }))
      for (;;) {
        while (queue.length === 0) await new Promise<void>((resolve) => (wake = resolve))
        const { message, length } = queue.shift()!
        queued -= length
        switch (message.type) {
          case "data":
            yield { events: message.data ?? [], offset: message.offset!, upToDate: message.upToDate === true, closed: false }
            break
          case "up-to-date":
            yield { events: [], offset: message.offset!, upToDate: true, closed: false }
            break
          case "closed":
            ended = true
            yield { events: [], offset: message.offset!, upToDate: true, closed: true }
            return
          case "error":
            ended = true
            if (message.status !== undefined && message.status >= 400 && message.status < 500 && message.status !== 429) {
              throw new DurableSessionsError(message.status, message.code ?? `HTTP_${message.status}`, message.message ?? "")
            }
            throw new Error(`subscription failed: ${message.code}`)
          case "aborted":
            throw signal?.reason ?? new Error("aborted")
          default:
            // fell-behind (resume from the offset already delivered) or the connection dropped.
            ended = true
            throw new Error(`subscription ended: ${message.type}`)
        }
      }
    } finally {
      signal?.removeEventListener("abort", abort)
      this.listeners.delete(sub)
      if (!ended && !dropped && socket.readyState === 1) socket.send(JSON.stringify({ op: "unsubscribe", sub }))
    }
  }

  close(): void {
    this.closed.abort()
    // Its subscriptions and calls learn now, not when a close event comes (a dead link may never send one).
    this.socket?.close(1000)
    this.dropCurrent?.()
  }

  /**
   * Replaces the token of an open socket with the token function's next one a while before the one in force expires (a
   * quarter of what it has left, at most a minute, ahead; see `tokenLifetime`): the server would otherwise close the
   * socket when it expires (`4401`), and every subscription on it would have to resume on a new one. A refresh
   * refused, or one whose token expires no later than the one in force, ends the refreshing: the socket is then closed
   * at expiry and opened again with the function's next token, as without it.
   */
  private scheduleRefresh(socket: WebSocket, state: SocketState, token: string | undefined): void {
    clearTimeout(state.refreshTimer)
    const lifetime = this.refreshes && !state.lost ? tokenLifetime(token) : undefined
    if (lifetime === undefined) return
    state.expiresAt = lifetime.expiresAt
    // setTimeout takes at most 2^31 − 1 ms (about 24.8 days); a longer wait would fire at once.
    const wait = Math.min(2 ** 31 - 1, Math.max(1_000, lifetime.ms - Math.min(60_000, lifetime.ms / 4)))
    state.refreshTimer = setTimeout(() => void this.refresh(socket, state, token), wait)
    // A pending refresh alone does not keep a Node process running.
    ;(state.refreshTimer as { unref?: () => void }).unref?.()
  }

  private async refresh(socket: WebSocket, state: SocketState, current: string | undefined): Promise<void> {
    let token: string | undefined
    try {
      token = await this.token()
    } catch {
      return
    }
    // The same token again (the function caches it), or one that expires no later: nothing to gain, and refreshing
    // again at once would spin.
    const next = tokenLifetime(token)
    if (!token || token === current || state.lost || next === undefined || (state.expiresAt !== undefined && next.expiresAt <= state.expiresAt)) return
    const id = `a${++this.next}`
    this.listeners.set(id, (message) => {
      this.listeners.delete(id)
      if (message.type === "ack") this.scheduleRefresh(socket, state, token)
    })
    try {
      socket.send(JSON.stringify({ op: "auth", id, token }))
    } catch {
      this.listeners.delete(id)
    }
  }

  private open(): Promise<WebSocket> {
    if (this.socket && this.socket.readyState === 1) return Promise.resolve(this.socket)
    this.opening ??= (async () => {
      const token = await this.token()
      const url = new URL(`${this.base}/v1/ws`)
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:"
      if (token) url.searchParams.set("access_token", token)
      const socket = new WebSocket(url, "durable-streams.v1")
      return new Promise<WebSocket>((resolve, reject) => {
        let ready = false
        let lost = false
        let heardAt = Date.now()
        let pingedAt: number | undefined
        let keepAlive: ReturnType<typeof setInterval> | undefined
        const state: SocketState = { lost: false }
        // Every subscription and pending call on this socket learns once that it is gone (a late close event of a
        // socket already dropped must not reach those of the next one).
        const loseConnection = () => {
          if (lost) return
          lost = true
          state.lost = true
          clearInterval(keepAlive)
          clearTimeout(state.refreshTimer)
          if (this.socket === socket) this.socket = undefined
          for (const listener of [...this.listeners.values()]) listener({ type: "connection-lost" }, 0)
        }
        // An upgrade that a proxy swallows would otherwise never answer: give up, so the join can fall back. The first
        // open after a socket was dropped as dead is held to the keep-alive's bound, as an open socket is: in Node the
        // upgrade may go out on a pooled HTTP connection of the same dead link. Giving up closes that connection, so the
        // next attempt gets a new one and the full 10 s, which a slow network may need.
        const openTimeoutMs = this.linkSuspect ? Math.min(10_000, 2 * this.keepAliveMs) : 10_000
        this.linkSuspect = false
        const timer = setTimeout(() => { if (!ready) { reject(new Error("the WebSocket did not open in time")); socket.close() } }, openTimeoutMs)
        // While anyone waits on the socket, silence is checked with a ping (answered by a pong, or by an UNKNOWN_OP error
        // from a server that predates it: anything heard will do). Nobody waiting, nothing is sent, so the server can
        // still close the socket as idle.
        const checkAlive = () => {
          const now = Date.now()
          if (this.socket !== socket) {
            // Replaced (it is closing, and its close event is still on its way): nothing of this socket waits any more.
            clearInterval(keepAlive)
          } else if (this.listeners.size === 0) {
            pingedAt = undefined
            heardAt = now
          } else if (pingedAt !== undefined) {
            if (now - pingedAt >= this.keepAliveMs) this.dropCurrent?.()
          } else if (now - heardAt >= this.keepAliveMs) {
            pingedAt = now
            try {
              socket.send(JSON.stringify({ op: "ping", id: `k${++this.next}` }))
            } catch {
              // Closing: its close event tells everyone waiting.
            }
          }
        }
        socket.onmessage = (event) => {
          heardAt = Date.now()
          pingedAt = undefined
          const text = String(event.data)
          const message = JSON.parse(text) as SocketMessage
          if (message.type === "hello") {
            // Closed while it opened: nobody is to use it.
            if (this.closed.signal.aborted) {
              clearTimeout(timer)
              reject(new Error("the client was closed"))
              socket.close(1000)
              return
            }
            ready = true
            clearTimeout(timer)
            const max = (message as { maxMessageBytes?: unknown }).maxMessageBytes
            if (typeof max === "number" && Number.isFinite(max) && max > 0) this.maxMessageBytes = max
            this.socket = socket
            this.dropCurrent = () => { this.linkSuspect = true; loseConnection(); socket.close() }
            keepAlive = setInterval(checkAlive, Math.max(1, Math.floor(this.keepAliveMs / 4)))
            this.scheduleRefresh(socket, state, token)
            resolve(socket)
          } else if (message.sub ?? message.id) {
            this.listeners.get((message.sub ?? message.id)!)?.(message, text.length)
          }
        }
        socket.onclose = () => {
          clearTimeout(timer)
          // A socket that never became ready has no subscriptions of its own to tell.
          if (ready) loseConnection()
          else reject(new Error("the WebSocket closed before it was ready"))
        }
        socket.onerror = () => { if (!ready) reject(new Error("the WebSocket could not connect")) }
      })
    })().then(
      (socket) => { this.failedAt = Number.NEGATIVE_INFINITY; return socket },
      (error: unknown) => { this.failedAt = Date.now(); throw error },
    ).finally(() => { this.opening = undefined })
    return this.opening
  }
}

/** What the hub keeps of one socket: whether it is gone, its token's expiry, and the timer of its next refresh. */
type SocketState = { lost: boolean; expiresAt?: number; refreshTimer?: ReturnType<typeof setTimeout> }

/**
 * A JWT's expiry (`exp`, in seconds since the epoch, as given) and how long it has left in ms by this machine's clock,
 * held within a tenth of its whole lifetime (`exp` − `iat`) and all of it when it has an `iat`: a clock that is off
 * neither makes a fresh token look expired (and refreshed over and over) nor an old one look fresh. `undefined` for a
 * token that is not a JWT or has no expiry.
 */
function tokenLifetime(token: string | undefined): { expiresAt: number; ms: number } | undefined {
  const payload = token?.split(".")[1]
  if (!payload) return undefined
  try {
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(payload.length / 4) * 4, "="))
    const { exp, iat } = JSON.parse(json) as { exp?: unknown; iat?: unknown }
    if (typeof exp !== "number" || !Number.isFinite(exp)) return undefined
    const left = exp * 1000 - Date.now()
    const whole = typeof iat === "number" && Number.isFinite(iat) && iat < exp ? (exp - iat) * 1000 : undefined
    return { expiresAt: exp, ms: whole === undefined ? left : Math.min(whole, Math.max(whole / 10, left)) }
  } catch {
    return undefined
  }
}

/**
 * Aborts a live read that waits on the network for `ms` at a stretch: its `signal` follows `outer`, and also aborts when
 * one wait (from `waiting` to `heard`) lasts `ms`. Only time spent waiting for the network counts, so a consumer slow to
 * ask for the next update is never taken for a dead link. `dispose` aborts whatever of the read is still open.
 */
function idleWatch(ms: number, outer?: AbortSignal) {
  const controller = new AbortController()
  const follow = () => controller.abort(outer?.reason)
  if (outer?.aborted) follow()
  else outer?.addEventListener("abort", follow, { once: true })
  let timer: ReturnType<typeof setTimeout> | undefined
  return {
    signal: controller.signal,
    waiting: () => {
      clearTimeout(timer)
      timer = setTimeout(() => controller.abort(new Error("the live read heard nothing in time; it resumes on a new request")), ms)
    },
    heard: () => clearTimeout(timer),
    dispose: () => {
      clearTimeout(timer)
      outer?.removeEventListener("abort", follow)
      controller.abort(new Error("the read ended"))
    },
  }
}

/**
 * The longest SSE event (and the data events before their control event) a live read takes, in characters: well above
 * the server's largest (a message of up to its 16 MiB append limit). Past it the read fails and resumes from its offset,
 * rather than holding whatever a proxy or server that misbehaves sends (a body without line ends) in memory.
 */
const MAX_SSE_EVENT_LENGTH = 64 * 1024 * 1024

/**
 * Parses an SSE body into events; `data:` lines are joined with `\n`, one leading space is stripped. `idle` is told when
 * the parser waits for more of the body and when some arrives (keep-alive comments included). An event longer than
 * `MAX_SSE_EVENT_LENGTH` throws.
 */
async function* readSse(body: ReadableStream<Uint8Array>, idle?: { waiting: () => void; heard: () => void }): AsyncGenerator<{ event: string; data: string }> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ""
  // How much of the buffer is known to hold no line end: each chunk is searched once, not the whole buffer again.
  let searched = 0
  let event = ""
  let data: string[] = []
  let dataLength = 0
  // Whether the last line ended with a CR, whose LF may still be to come.
  let afterCr = false
  for (;;) {
    idle?.waiting()
    const { value, done } = await reader.read()
    idle?.heard()
    if (done) return
    buffer += decoder.decode(value, { stream: true })
    for (;;) {
      // A line ends with CRLF, LF or a lone CR (the SSE format allows all three). A CR ends its line at once; an LF right
      // after it, in this chunk or at the start of the next, belongs to it.
      if (afterCr && buffer.length > 0) {
        if (buffer.startsWith("\n")) buffer = buffer.slice(1)
        afterCr = false
      }
      const end = lineEnd(buffer, searched)
      if (end < 0) break
      const line = buffer.slice(0, end)
      afterCr = buffer[end] === "\r"
      buffer = buffer.slice(end + 1)
      searched = 0
      if (line === "") {
        if (event && data.length > 0) yield { event, data: data.join("\n") }
        event = ""
        data = []
        dataLength = 0
      } else if (line.startsWith("event:")) {
        event = line.slice(6).trim()
      } else if (line.startsWith("data:")) {
        const part = line.slice(line.startsWith("data: ") ? 6 : 5)
        dataLength += part.length + 1
        if (dataLength > MAX_SSE_EVENT_LENGTH) throw new Error(`an SSE event is longer than ${MAX_SSE_EVENT_LENGTH} characters`)
        data.push(part)
      }
    }
    searched = buffer.length
    if (dataLength + buffer.length > MAX_SSE_EVENT_LENGTH) throw new Error(`an SSE event is longer than ${MAX_SSE_EVENT_LENGTH} characters`)
  }
}

/** Where the first CR or LF at or after `from` is, or -1. */
function lineEnd(text: string, from: number): number {
  for (let i = from; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 10 || c === 13) return i
  }
  return -1
}

/** Reads a body to its end as text; `idle` is told when it waits on the network and when some of the body arrives. */
async function readText(body: ReadableStream<Uint8Array>, idle: { waiting: () => void; heard: () => void }): Promise<string> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let text = ""
  for (;;) {
    idle.waiting()
    const { value, done } = await reader.read()
    idle.heard()
    if (done) return text + decoder.decode()
    text += decoder.decode(value, { stream: true })
  }
}

function restore(item: string | null | undefined): { state: SessionState; offset: string } | undefined {
  if (!item) return undefined
  try {
    const saved = JSON.parse(item) as { offset?: unknown; state?: unknown }
    if (typeof saved.offset !== "string" || !Array.isArray(saved.state)) return undefined
    return { state: SessionState.fromJSON(saved.state as [string, Record<string, unknown>][]), offset: saved.offset }
  } catch {
    return undefined // unreadable: hydrate from the snapshot instead
  }
}

/**
 * Saves state and offset together (one item, so they always match): at most every 500 ms while a reply streams, the
 * latest once things go quiet, and whenever the page is hidden, since a reload or a closed tab gives no other warning.
 */
function throttledSave(storage: ClientOptions["storage"], key: string) {
  let latest: { state: SessionState; offset: string } | undefined
  let last = 0
  let timer: ReturnType<typeof setTimeout> | undefined
  const write = () => {
    if (timer) clearTimeout(timer)
    timer = undefined
    if (!storage || !latest) return
    try {
      storage.setItem(key, JSON.stringify({ offset: latest.offset, state: latest.state.toJSON() }))
    } catch {
      // storage full or unavailable: the next join hydrates from the snapshot
    }
    latest = undefined
    last = Date.now()
  }
  const onHidden = () => globalThis.document?.visibilityState === "hidden" && write()
  if (storage) {
    globalThis.addEventListener?.("pagehide", write)
    globalThis.document?.addEventListener("visibilitychange", onHidden)
  }
  return {
    now(state: SessionState, offset: string) {
      latest = { state, offset }
      write()
    },
    soon(state: SessionState, offset: string) {
      if (!storage) return
      latest = { state, offset }
      const wait = 500 - (Date.now() - last)
      if (wait <= 0) write()
      else timer ??= setTimeout(write, wait)
    },
    dispose() {
      write()
      globalThis.removeEventListener?.("pagehide", write)
      globalThis.document?.removeEventListener("visibilitychange", onHidden)
    },
  }
}

const jitter = (ms: number) => ms * (0.5 + Math.random() / 2)

/** The error code of an error body (`{ error: { code } }`), if it has one. */
function codeOf(body: unknown): string | undefined {
  return (body as { error?: { code?: string } } | undefined)?.error?.code
}

/** The error code of a refusal, read from a copy of the response (its body stays unread). */
async function errorCode(response: Response): Promise<string | undefined> {
  try {
    return ((await response.clone().json()) as { error?: { code?: string } }).error?.code
  } catch {
    return undefined
  }
}

/**
 * A read that stayed up this long after its first delivery, in ms, was a working connection: the reconnect after it
 * starts from `reconnectDelayMs` again.
 */
const STABLE_READ_MS = 1000

/** A long-poll answered with nothing sooner than this, in ms, was not held by the server. */
const HELD_POLL_MS = 1000

/** The longest `Retry-After` the client waits out, in ms; a longer one is waited this long. */
const MAX_RETRY_AFTER_MS = 60_000

/** A response's `Retry-After` (seconds or an HTTP date), in ms, at most `MAX_RETRY_AFTER_MS`; undefined without one. */
function retryAfterHeader(response: Response): number | undefined {
  const value = response.headers.get("retry-after")?.trim()
  if (!value) return undefined
  const ms = /^\d+$/.test(value) ? Number(value) * 1000 : Date.parse(value) - Date.now()
  return Number.isFinite(ms) ? Math.min(MAX_RETRY_AFTER_MS, Math.max(0, ms)) : undefined
}

/** An abort signal that fires after `ms` (where `AbortSignal.timeout` is missing, from a timer of its own). */
function timeoutSignal(ms: number): AbortSignal {
  if (typeof AbortSignal.timeout === "function") return AbortSignal.timeout(ms)
  const controller = new AbortController()
  setTimeout(() => controller.abort(new DOMException("The operation timed out.", "TimeoutError")), ms)
  return controller.signal
}

function retryAfterOf(error: unknown): number | undefined {
  return error instanceof DurableSessionsError ? error.retryAfterMs : undefined
}

/**
 * Waits before a reconnect: half to all of `ms`, and at least `atLeastMs` (a server's `Retry-After`). The browser
 * coming back online ends the wait early unless `endsOnline` is false (the server, not the network, asked for it).
 */
function backoff(ms: number, signal?: AbortSignal, options: { endsOnline?: boolean; atLeastMs?: number | undefined } = {}): Promise<void> {
  const endsOnline = options.endsOnline ?? options.atLeastMs === undefined
  return new Promise((resolve, reject) => {
    // A listener added to a signal that has already fired never runs.
    if (signal?.aborted) {
      reject(signal.reason)
      return
    }
    const done = () => {
      clearTimeout(timer)
      if (endsOnline) globalThis.removeEventListener?.("online", done)
      signal?.removeEventListener("abort", aborted)
      resolve()
    }
    const aborted = () => {
      clearTimeout(timer)
      if (endsOnline) globalThis.removeEventListener?.("online", done)
      reject(signal!.reason)
    }
    const timer = setTimeout(done, Math.max(jitter(ms), options.atLeastMs ?? 0))
    if (endsOnline) globalThis.addEventListener?.("online", done)
    signal?.addEventListener("abort", aborted, { once: true })
  })
}
