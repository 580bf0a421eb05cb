// Starts the real server as a child process for the Node test suites that need their own (a slower demo agent, no
// agent, or a kill -9 and restart on the same port and data). The server is the built DurableSessions.Server.dll:
// DURABLE_SESSIONS_SERVER_DLL, or the Release build of this checkout. The strategy execution app starts the same way
// (STRATEGY_APP_DLL, or the Release build).
import { spawn } from "node:child_process"
import { mkdtempSync, readFileSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
const defaultDll = join(root, "src/DurableSessions.Server/bin/Release/net10.0/DurableSessions.Server.dll")
const strategyDll = join(root, "apps/StrategyExecution/StrategyExecution/bin/Release/net10.0/StrategyExecution.dll")

/**
 * Where free ports are taken: outside the kernel's ephemeral range (/proc/sys/net/ipv4/ip_local_port_range,
 * 32768-60999 by default). A port from that range can be given to any outgoing connection while a server restarts on
 * it, and the server then cannot bind it. Up to 12,768 ports below the range, or above it when there is no room below.
 */
function portRange() {
  let [first, last] = [32_768, 60_999]
  try {
    const parts = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number)
    if (parts.length === 2 && parts.every(Number.isInteger) && parts[0] <= parts[1]) [first, last] = parts
  } catch {
    // Not Linux, or not readable: the default range.
  }
  if (first - 1_024 >= 1_000) return [Math.max(1_024, first - 12_768), first]
  if (65_536 - (last + 1) >= 1_000) return [last + 1, Math.min(65_536, last + 1 + 12_768)]
  return [20_000, 32_768]
}

const [portsFirst, portsEnd] = portRange()

/** A loopback port nothing listens on now, outside the kernel's ephemeral range (see portRange). */
export async function freePort() {
  for (let tries = 0; tries < 1000; tries++) {
    const port = portsFirst + Math.floor(Math.random() * (portsEnd - portsFirst))
    const free = await new Promise((resolve) => {
      const probe = createServer()
      probe.once("error", () => resolve(false))
      probe.listen(port, "127.0.0.1", () => probe.close(() => resolve(true)))
    })
    if (free) return port
  }
  throw new Error(`no free loopback port in ${portsFirst}-${portsEnd - 1}`)
}

/** Starts a server; `args` are extra command-line settings, e.g. `["--no-agent"]`. */
export function startServer(args = []) {
  return startProgram(process.env.DURABLE_SESSIONS_SERVER_DLL ?? defaultDll, (url, dataDir) => ["--urls", url, "--data", dataDir, "--long-poll-timeout-ms", "1000", ...args])
}

/** Starts the strategy execution app with its demo organisation in a fresh data directory. */
export function startStrategyApp(args = []) {
  return startProgram(process.env.STRATEGY_APP_DLL ?? strategyDll, (url, dataDir) => ["--urls", url, "--Data", dataDir, ...args])
}

/** Starts a built program that answers `GET /health`, on a free port with a scratch data directory. */
async function startProgram(dll, argsFor) {
  const port = await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), "ds-node-test-"))
  const url = `http://127.0.0.1:${port}`
  let child
  let log = ""

  async function launch() {
    log = ""
    child = spawn("dotnet", [dll, ...argsFor(url, dataDir)], {
      stdio: ["ignore", "pipe", "pipe"],
    })
    child.stdout.on("data", (d) => (log += d))
    child.stderr.on("data", (d) => (log += d))
    const exited = new Promise((resolve) => child.once("exit", resolve))
    const deadline = Date.now() + 60_000
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}:\n${log}`)
      try {
        // Wrapped: an async function returning a promise would wait for it (for the exit).
        if ((await fetch(`${url}/health`)).ok) return { exited }
      } catch {
        // not listening yet
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    throw new Error(`server did not start:\n${log}`)
  }

  let { exited } = await launch()
  return {
    url,
    port,
    get log() { return log },
    /** kill -9: no shutdown, no flush; only what was acknowledged must survive. */
    async kill() {
      child.kill("SIGKILL")
      await exited
    },
    /** Starts the server again on the same port and data. */
    async restart() {
      ;({ exited } = await launch())
    },
    async stop() {
      if (child.exitCode === null) {
        child.kill("SIGTERM")
        await exited
      }
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}
