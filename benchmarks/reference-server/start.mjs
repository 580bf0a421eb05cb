// Starts the Node.js reference Durable Streams server (@durable-streams/server)
// with file-backed storage, for benchmarking against another server.
//
// Usage: node start.mjs --port 4439 --data /tmp/refdata [--long-poll-ms 30000]
//
// The reference server treats the whole URL path as the stream name, so
// streams live wherever the client puts them; the conformance tests (and
// this benchmark) use http://127.0.0.1:<port>/v1/stream/<name>.
import { mkdirSync } from "node:fs"
import { resolve } from "node:path"
import { parseArgs } from "node:util"
import { DurableStreamTestServer } from "@durable-streams/server"

// Read the command-line flags.
const { values } = parseArgs({
  options: {
    port: { type: `string` },
    data: { type: `string` },
    "long-poll-ms": { type: `string`, default: `30000` },
  },
})
if (!values.port || !values.data) {
  console.error(`usage: node start.mjs --port <port> --data <dir> [--long-poll-ms <ms>]`)
  process.exit(2)
}

// The library prints its own info/warn lines (e.g. "Starting recovery...") to
// stdout; send them to stderr so stdout carries only the "listening" line.
console.info = console.warn = (...args) => console.error(...args)

// Make sure the data directory exists; the server keeps its files there.
const dataDir = resolve(values.data)
mkdirSync(dataDir, { recursive: true })

// Create the server: loopback only, file-backed storage in dataDir.
const server = new DurableStreamTestServer({
  host: `127.0.0.1`,
  port: Number(values.port),
  dataDir,
  longPollTimeout: Number(values[`long-poll-ms`]),
})

await server.start()
console.log(`listening http://127.0.0.1:${values.port}`)

// On Ctrl-C or a kill signal, close connections and the store, then exit.
// A second signal, or a stop that takes over 5 seconds, exits at once.
let stopping = false
async function shutdown() {
  if (stopping) process.exit(1)
  stopping = true
  setTimeout(() => process.exit(1), 5000).unref()
  // Wake every waiting long-poll/SSE reader first. The library's own
  // cancelAllWaits() removes items from the list while walking it, so with
  // two or more waiters it skips every other one and stop() then hangs until
  // the long-poll timeout; walking a copy wakes them all.
  for (const waiter of [...(server.store.pendingLongPolls ?? [])]) {
    waiter.resolve([])
  }
  await server.stop()
  process.exit(0)
}
process.on(`SIGINT`, shutdown)
process.on(`SIGTERM`, shutdown)
