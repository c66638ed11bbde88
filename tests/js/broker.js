'use strict'

// Starts a real vltava broker the way a user would, for the KafkaJS tests:
//
//   vltava broker --listeners PLAINTEXT://127.0.0.1:0 --data-dir DIR [--override k=v ...]
//
// With port 0 the broker prints exactly one stdout line,
// "vltava: listening on 127.0.0.1:PORT", once it is ready; we wait for that
// line (no fixed sleeps) and stop the broker with SIGTERM afterwards.
//
// Environment: VLTAVA_BIN (default <target dir>/debug/vltava: $CARGO_TARGET_DIR or <repo>/target),
//              VLTAVA_START_TIMEOUT seconds (default 30).

const { spawn } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const readline = require('node:readline')

const REPO_ROOT = path.resolve(__dirname, '..', '..')
const LISTENING_RE = /^vltava: listening on (\d{1,3}(?:\.\d{1,3}){3}):(\d+)\s*$/
// Printed right after, when the broker also serves a schema registry.
const REGISTRY_RE = /^vltava: schema registry on (http:\/\/\S+)\s*$/
const START_TIMEOUT_MS = Number(process.env.VLTAVA_START_TIMEOUT || 30) * 1000
const STOP_TIMEOUT_MS = 30000

const running = new Set()
process.on('exit', () => {
  for (const child of running) {
    try {
      child.kill('SIGKILL')
    } catch (_) {}
  }
})

function vltavaBin() {
  // Where cargo puts it: $CARGO_TARGET_DIR (relative to the repo root) or <repo>/target.
  return process.env.VLTAVA_BIN || path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR || 'target', 'debug', 'vltava')
}

async function startBroker({ overrides = {}, dataDir, listeners, nodeId } = {}) {
  const bin = vltavaBin()
  try {
    fs.accessSync(bin, fs.constants.X_OK)
  } catch (_) {
    throw new Error(
      `vltava binary not found or not executable at ${bin} ` +
        '(build it with `cargo build --bin vltava` or set VLTAVA_BIN)'
    )
  }
  const baseDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vltava-js-'))
  dataDir = dataDir || path.join(baseDir, 'data')
  fs.mkdirSync(dataDir, { recursive: true })
  const logPath = path.join(baseDir, 'stderr.log')
  const logFd = fs.openSync(logPath, 'a')
  const args = ['broker', '--listeners', listeners || 'PLAINTEXT://127.0.0.1:0', '--data-dir', dataDir]
  if (nodeId !== undefined) args.push('--node-id', String(nodeId))
  for (const [k, v] of Object.entries(overrides)) args.push('--override', `${k}=${v}`)

  // vltava reads VLTAVA_<KEY> variables as broker config: keep them out.
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('VLTAVA_')))
  env.NO_COLOR = '1' // plain stderr logs, for failure reports
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', logFd] })
  fs.closeSync(logFd)
  running.add(child)
  const exited = new Promise(resolve => child.once('exit', (code, signal) => resolve({ code, signal })))
  exited.then(() => running.delete(child))

  // The end of stderr, plus the start of any error or panic report (its
  // message comes before a long backtrace).
  const stderrTail = (n = 40) => {
    let lines
    try {
      lines = fs.readFileSync(logPath, 'utf8').split('\n')
    } catch (_) {
      return '<no stderr log>'
    }
    const tailStart = Math.max(0, lines.length - n)
    const firstError = lines.findIndex(l => l.includes('panicked at') || l.startsWith('Error:'))
    if (firstError < 0 || firstError >= tailStart) return lines.slice(tailStart).join('\n')
    return [...lines.slice(firstError, Math.min(firstError + 20, tailStart)), '[...]', ...lines.slice(tailStart)].join('\n')
  }

  const lines = readline.createInterface({ input: child.stdout })
  const seen = []
  const registryUrl = new Promise(resolve => {
    lines.on('line', line => {
      const m = REGISTRY_RE.exec(line)
      if (m) resolve(m[1])
    })
  })
  const address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(
        new Error(
          `vltava did not print "vltava: listening on HOST:PORT" within ${START_TIMEOUT_MS / 1000}s; ` +
            `stdout=${JSON.stringify(seen)}\n--- stderr tail (${logPath}) ---\n${stderrTail()}`
        )
      )
    }, START_TIMEOUT_MS)
    lines.on('line', line => {
      seen.push(line)
      const m = LISTENING_RE.exec(line)
      if (m) {
        clearTimeout(timer)
        resolve({ host: m[1], port: Number(m[2]) })
      }
    })
    exited.then(({ code, signal }) => {
      clearTimeout(timer)
      reject(new Error(`vltava exited (code ${code}, signal ${signal}) before listening\n${stderrTail()}`))
    })
  })
  // Keep draining stdout (the 'line' listener stays attached) so the broker never blocks.

  return {
    ...address,
    bootstrap: `${address.host}:${address.port}`,
    // The registry's URL, once announced (only with schema.registry.listeners set).
    registryUrl: () => registryUrl,
    dataDir,
    logPath,
    stderrTail,
    alive: () => child.exitCode === null && child.signalCode === null,
    // A crash (SIGKILL), for failover tests.
    async kill() {
      child.kill('SIGKILL')
      return exited
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return exited
      child.kill('SIGTERM')
      let timer
      const timeout = new Promise(resolve => {
        timer = setTimeout(() => resolve(null), STOP_TIMEOUT_MS)
      })
      const result = await Promise.race([exited, timeout])
      clearTimeout(timer)
      if (result === null) {
        child.kill('SIGKILL')
        await exited
        throw new Error(`vltava did not exit within ${STOP_TIMEOUT_MS / 1000}s of SIGTERM; killed it`)
      }
      return result
    },
  }
}

// KAFKAJS_LOG_LEVEL=debug|info|warn|error to see KafkaJS's own logs. KafkaJS logs expected
// broker errors (e.g. TOPIC_ALREADY_EXISTS) at ERROR level; failures surface as exceptions.
function kafkaFor(broker, clientId) {
  const { Kafka, logLevel } = require('kafkajs')
  const level = logLevel[String(process.env.KAFKAJS_LOG_LEVEL || 'nothing').toUpperCase()] ?? logLevel.NOTHING
  return new Kafka({
    clientId,
    brokers: [broker.bootstrap],
    logLevel: level,
    connectionTimeout: 10000,
    requestTimeout: 30000,
    retry: { retries: 5 },
  })
}

// Stops the broker and checks it was alive until then and exited cleanly on SIGTERM.
async function stopAndCheck(broker) {
  const assert = require('node:assert/strict')
  const alive = broker.alive()
  const { code, signal } = await broker.stop()
  assert.ok(alive, `broker died during the tests:\n${broker.stderrTail()}`)
  assert.equal(code, 0, `broker exit after SIGTERM: code ${code} signal ${signal}`)
}

// `n` nodes in combined mode (broker and metadata-quorum voter each), started together: each
// prints its listening line only once a quorum has formed.
async function startCluster(n = 3, overrides = {}) {
  const net = require('node:net')
  const freePort = () =>
    new Promise((resolve, reject) => {
      const srv = net.createServer()
      srv.once('error', reject)
      srv.listen(0, '127.0.0.1', () => {
        const { port } = srv.address()
        srv.close(() => resolve(port))
      })
    })
  const ports = []
  for (let i = 0; i < n; i++) ports.push(await freePort())
  const voters = ports.map((p, i) => `${i + 1}@127.0.0.1:${p}`).join(',')
  return Promise.all(
    ports.map((p, i) =>
      startBroker({
        nodeId: i + 1,
        listeners: `PLAINTEXT://127.0.0.1:0,CONTROLLER://127.0.0.1:${p}`,
        overrides: {
          'controller.quorum.voters': voters,
          'controller.listener.names': 'CONTROLLER',
          'listener.security.protocol.map': 'PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
          'controller.quorum.election.timeout.ms': '500',
          'broker.session.timeout.ms': '3000',
          'offsets.topic.num.partitions': '3',
          ...overrides,
        },
      })
    )
  )
}

module.exports = { startBroker, startCluster, kafkaFor, stopAndCheck, vltavaBin }
