import { createRequire } from "node:module"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { DefaultChatTransport } from "ai"
import { Chat } from "@ai-sdk/react"
import { chatSuite } from "./chat-suite.mjs"

const { version } = createRequire(import.meta.url)("ai/package.json")
chatSuite({ afterAll, beforeAll, describe, expect, test }, { Chat, DefaultChatTransport, version, expectedMajor: 6 })
