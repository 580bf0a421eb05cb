// Client for DurableSessions: join a session (snapshot + live tail over SSE), resume after any disconnect from the last
// offset (no gap, no duplicate), materialize the conversation, send messages, cancel and steer runs.

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
  /** A bearer token, when the server requires one. */
  token?: string
  /** The participant id this client writes as. */
  participantId?: string
  /** First reconnect delay in ms (doubled per failure, with jitter). Default 100. */
  reconnectDelayMs?: number
  /** Longest reconnect delay in ms. Default 5000. */
  maxReconnectDelayMs?: number
  /** Where to remember the last offset per session (e.g. `localStorage`), so a reload resumes instead of re-hydrating. */
  storage?: Pick<Storage, "getItem" | "setItem">
}

export type ConnectionState = "connecting" | "catching-up" | "live" | "reconnecting"

/** The materialized state of a session: entities by type and key, deltas rolled into their message. */
export class SessionState {
  private readonly entities = new Map<string, Record<string, unknown>>()
  private readonly order: string[] = []

  /** Applies one event (State Protocol semantics; `delta` text is appended to its message part). */
  apply(event: SessionEvent): void {
    if (event.headers?.control === "reset") {
      this.entities.clear()
      this.order.length = 0
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
      const index = this.order.indexOf(id)
      if (index >= 0) this.order.splice(index, 1)
    } else if (event.value && typeof event.value === "object") {
      if (!this.entities.has(id)) this.order.push(id)
      this.entities.set(id, structuredClone(event.value))
    }
  }

  get(type: string, key: string): Record<string, unknown> | undefined {
    return this.entities.get(`${type}\u0000${key}`)
  }

  all(type: string): Record<string, unknown>[] {
    return this.order.filter((id) => id.startsWith(`${type}\u0000`)).map((id) => this.entities.get(id)!)
  }

  /** A stable JSON form of the state, for comparing two clients. */
  toJSON(): unknown {
    return this.order.map((id) => [id, this.entities.get(id)])
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
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message)
  }
}

export class DurableSessionsClient {
  readonly participantId: string
  private readonly base: string

  constructor(private readonly options: ClientOptions) {
    this.base = options.baseUrl.replace(/\/$/, "")
    this.participantId = options.participantId ?? `client:${Math.random().toString(36).slice(2, 10)}`
  }

  session(id: string): SessionClient {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(id)) throw new Error(`invalid session id: ${id}`)
    return new SessionClient(this, id)
  }

  /** @internal */
  async request(method: string, path: string, body?: unknown, signal?: AbortSignal): Promise<Response> {
    const headers: Record<string, string> = {}
    if (this.options.token) headers.authorization = `Bearer ${this.options.token}`
    if (body !== undefined) headers["content-type"] = "application/json"
    const init: RequestInit = { method, headers }
    if (body !== undefined) init.body = JSON.stringify(body)
    if (signal) init.signal = signal
    const response = await fetch(`${this.base}${path}`, init)
    if (response.status >= 400 && response.status < 500) {
      let code = `HTTP_${response.status}`
      let message = `The server answered ${response.status}.`
      try {
        const error = (await response.json()) as { error?: { code?: string; message?: string } }
        code = error.error?.code ?? code
        message = error.error?.message ?? message
      } catch {
        // not a JSON error body
      }
      throw new DurableSessionsError(response.status, code, message)
    }
    return response
  }

  /** @internal */
  get settings(): Required<Pick<ClientOptions, "reconnectDelayMs" | "maxReconnectDelayMs">> & ClientOptions {
    return { reconnectDelayMs: 100, maxReconnectDelayMs: 5000, ...this.options }
  }
}

export class SessionClient {
  constructor(private readonly client: DurableSessionsClient, readonly id: string) {}

  async create(settings: { newMessagePolicy?: "queue" | "interrupt" | "reject"; title?: string } = {}): Promise<void> {
    await this.client.request("PUT", `/v1/sessions/${this.id}`, settings)
  }

  async sendMessage(text: string, role: "user" | "assistant" = "user"): Promise<string> {
    const response = await this.client.request("POST", `/v1/sessions/${this.id}/messages`, { text, role, author: this.client.participantId })
    return ((await response.json()) as { messageId: string }).messageId
  }

  /** Cancels a running run; the returned offset is the fence after which nothing more is accepted for it. */
  async cancel(runId: string): Promise<{ controlId: string; offset: string }> {
    const response = await this.client.request("POST", `/v1/sessions/${this.id}/runs/${runId}/cancel`, { by: this.client.participantId })
    return (await response.json()) as { controlId: string; offset: string }
  }

  async steer(runId: string, text: string): Promise<{ controlId: string; offset: string }> {
    const response = await this.client.request("POST", `/v1/sessions/${this.id}/runs/${runId}/steer`, { by: this.client.participantId, text })
    return (await response.json()) as { controlId: string; offset: string }
  }

  async heartbeat(kind: "client" | "human" = "client", name?: string): Promise<number> {
    const response = await this.client.request("POST", `/v1/sessions/${this.id}/presence`, { participantId: this.client.participantId, kind, name })
    return ((await response.json()) as { timeoutMs: number }).timeoutMs
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
   * Joins the session: hydrates from the snapshot, then follows the live tail over SSE, reconnecting with backoff
   * after any failure and resuming from the last offset it delivered. Events are delivered only together with the
   * offset that follows them, so a connection cut mid-event never yields a partial or repeated batch.
   */
  async *join(signal?: AbortSignal, onState?: (state: ConnectionState) => void): AsyncGenerator<SessionUpdate> {
    const settings = this.client.settings
    const state = new SessionState()
    let delay = settings.reconnectDelayMs
    onState?.("connecting")

    // Hydrate: the snapshot (retried until a complete one arrives).
    let offset: string
    for (;;) {
      try {
        const response = await this.client.request("GET", `/v1/sessions/${this.id}`, undefined, signal)
        const snapshot = (await response.json()) as SessionEvent[]
        offset = response.headers.get("Stream-Next-Offset")!
        for (const event of snapshot) state.apply(event)
        break
      } catch (error) {
        if (error instanceof DurableSessionsError || signal?.aborted) throw error
        await sleep(jitter(delay), signal)
        delay = Math.min(settings.maxReconnectDelayMs, delay * 2)
      }
    }
    settings.storage?.setItem(`durable-sessions:${this.id}`, offset)
    yield { state, events: [], offset, upToDate: false }

    onState?.("catching-up")
    for (;;) {
      try {
        const response = await this.client.request("GET", `/v1/stream/sessions/${this.id}?offset=${encodeURIComponent(offset)}&live=sse`, undefined, signal)
        if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`)
        let pending: SessionEvent[] = []
        for await (const { event, data } of readSse(response.body)) {
          if (event === "data") {
            pending.push(...(JSON.parse(data) as SessionEvent[]))
          } else if (event === "control") {
            const control = JSON.parse(data) as { streamNextOffset: string; upToDate?: boolean; streamClosed?: boolean }
            for (const e of pending) state.apply(e)
            offset = control.streamNextOffset
            settings.storage?.setItem(`durable-sessions:${this.id}`, offset)
            const upToDate = control.upToDate === true || control.streamClosed === true
            onState?.(upToDate ? "live" : "catching-up")
            yield { state, events: pending, offset, upToDate }
            pending = []
            delay = settings.reconnectDelayMs
            if (control.streamClosed) return
          }
        }
      } catch (error) {
        if (error instanceof DurableSessionsError || signal?.aborted) throw error
      }
      onState?.("reconnecting")
      await sleep(jitter(delay), signal)
      delay = Math.min(settings.maxReconnectDelayMs, delay * 2)
    }
  }
}

/** Parses an SSE body into events; `data:` lines are joined with `\n`, one leading space is stripped. */
async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<{ event: string; data: string }> {
  const reader = body.getReader()
  const decoder = new TextDecoder()
  let buffer = ""
  let event = ""
  let data: string[] = []
  for (;;) {
    const { value, done } = await reader.read()
    if (done) return
    buffer += decoder.decode(value, { stream: true })
    let newline: number
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "")
      buffer = buffer.slice(newline + 1)
      if (line === "") {
        if (event && data.length > 0) yield { event, data: data.join("\n") }
        event = ""
        data = []
      } else if (line.startsWith("event:")) {
        event = line.slice(6).trim()
      } else if (line.startsWith("data:")) {
        data.push(line.slice(line.startsWith("data: ") ? 6 : 5))
      }
    }
  }
}

const jitter = (ms: number) => ms * (0.5 + Math.random() / 2)

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms)
    signal?.addEventListener("abort", () => {
      clearTimeout(timer)
      reject(signal.reason)
    }, { once: true })
  })
}
