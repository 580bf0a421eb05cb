import { describe, expect, it } from "vitest"
import { type SessionEvent, SessionState } from "../src/index"

const message = (key: string, value: Record<string, unknown> = {}, operation: "insert" | "update" = "insert"): SessionEvent =>
  ({ type: "message", key, value: { id: key, ...value }, headers: { operation } })
const remove = (key: string): SessionEvent => ({ type: "message", key, headers: { operation: "delete" } })

describe("SessionState", () => {
  it("keeps entities in order of first insertion through deletes, updates in place and inserts again", () => {
    const state = new SessionState()
    const expected: string[] = []
    for (let i = 0; i < 300; i++) {
      state.apply(message(`m${i}`, { n: i }))
      expected.push(`m${i}`)
    }
    for (let i = 0; i < 300; i++) {
      if (i % 4 !== 0) {
        state.apply(remove(`m${i}`))
        expected.splice(expected.indexOf(`m${i}`), 1)
      }
      if (i % 50 === 49) {
        // A deleted message written again goes last; one that stays, updated, keeps its place.
        state.apply(message(`m${i - 2}`, { again: true }))
        expected.push(`m${i - 2}`)
        const kept = i - 49 - ((i - 49) % 4)
        state.apply(message(`m${kept}`, { updated: true }, "update"))
      }
    }
    state.apply(remove("m-none"))
    state.apply(remove("m1"))

    expect(state.all("message").map((m) => m.id)).toEqual(expected)
    expect(state.get("message", "m47")?.again).toBe(true)
    expect(state.get("message", "m0")?.updated).toBe(true)
    const restored = SessionState.fromJSON(JSON.parse(JSON.stringify(state.toJSON())))
    expect(restored.all("message").map((m) => m.id)).toEqual(expected)
    expect(restored.toJSON()).toEqual(state.toJSON())

    state.apply({ headers: { control: "reset" } })
    state.apply(message("m5"))
    state.apply(message("m4"))
    expect(state.all("message").map((m) => m.id)).toEqual(["m5", "m4"])
  })
})
