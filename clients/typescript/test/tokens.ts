// Helpers of the tests that run against a server with access control on: tokens as it expects them, a condition to
// wait for, and a session's user messages as they arrive.
import { createHmac } from "node:crypto"
import type { DurableSessionsClient } from "../src/index"

/** An HS256 JWT signed with `key`, as the server's access control expects: a subject, grants, and an expiry in whole seconds. */
export function jwt(key: string, subject: string, grants: Record<string, string[]>, lifetimeSeconds: number): string {
  const now = Math.floor(Date.now() / 1000)
  const header = Buffer.from(JSON.stringify({ alg: "HS256", typ: "JWT" })).toString("base64url")
  const payload = Buffer.from(JSON.stringify({ sub: subject, grants, iat: now, nbf: now, exp: now + lifetimeSeconds })).toString("base64url")
  const signature = createHmac("sha256", key).update(`${header}.${payload}`).digest("base64url")
  return `${header}.${payload}.${signature}`
}

/** Waits until `condition` holds, checking every 20 ms, for at most 20 s. */
export async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Follows `session`, putting the text of each message inserted into `texts`, until it holds `count` of them. */
export async function collectMessages(client: DurableSessionsClient, session: string, texts: string[], count: number, signal: AbortSignal): Promise<void> {
  for await (const update of client.session(session).join(signal)) {
    for (const e of update.events) if (e.type === "message" && e.headers.operation === "insert") texts.push(String((e.value as { parts: { text: string }[] }).parts[0]!.text))
    if (texts.length >= count) return
  }
}
