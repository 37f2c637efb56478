// A real AT Protocol network on loopback for skyhouse's end-to-end tests:
// @atproto/dev-env's TestNetworkNoAppView, i.e. an in-memory PLC directory
// and the reference PDS on SQLite, nothing else (no AppView, no relay).
//
//   node e2e/network.mjs [--pds-port P] [--plc-port Q] [--tmpdir DIR] [--ignore-stdin]
//
// Once both servers answer it prints ONE JSON line on stdout:
//
//   {"pds":"http://127.0.0.1:P","plc":"http://127.0.0.1:Q","adminPassword":"…",
//    "pdsPublicUrl":"http://localhost:P","pdsDid":"did:web:localhost","handleDomain":".test"}
//
// and runs until its standard input closes (the process that started it is
// gone: the pipe's write end closes however that process ends), or until
// SIGTERM/SIGINT; then it closes the network and exits. `--ignore-stdin` is
// for a supervisor that keeps stdin at /dev/null and kills the process itself
// (skyhouse-testkit's watchdog). Everything else (dev-env's own chatter)
// goes to stderr, so stdout stays machine-readable.
//
// Nothing here may reach the internet (CI machines have none, and a test must
// not depend on it): servers bind 127.0.0.1 only, handles live under `.test`
// (resolved by dev-env against this PDS, no DNS), no crawlers (relays) are
// configured, e-mail is never sent (no SMTP URL: the PDS only logs mails), the
// AppView and moderation URLs are `.invalid`, and as a last guard every DNS
// query for a name other than localhost fails at once with a line on stderr.

import crypto from 'node:crypto'
import dns from 'node:dns'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

const LOOPBACK = '127.0.0.1'
// How long closing the network may take before the process exits anyway.
const CLOSE_GRACE_MS = 5000

function log(...args) {
  process.stderr.write(`network.mjs: ${args.join(' ')}\n`)
}

function usage(message) {
  log(message)
  log('usage: node network.mjs [--pds-port P] [--plc-port Q] [--tmpdir DIR] [--ignore-stdin]')
  process.exit(2)
}

function parseArgs(argv) {
  const opts = { pdsPort: 0, plcPort: 0, tmpdir: undefined, ignoreStdin: false }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--ignore-stdin') {
      opts.ignoreStdin = true
    } else if (arg === '--tmpdir') {
      opts.tmpdir = argv[++i]
      if (!opts.tmpdir) usage('--tmpdir needs a directory')
    } else if (arg === '--pds-port' || arg === '--plc-port') {
      const value = argv[++i]
      const port = Number(value)
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        usage(`${arg}: not a port: ${value}`)
      }
      opts[arg === '--pds-port' ? 'pdsPort' : 'plcPort'] = port
    } else {
      usage(`unknown argument: ${arg}`)
    }
  }
  return opts
}

// --- guards, installed before dev-env is loaded ------------------------------

// stdout carries only the JSON line: dev-env and its libraries log with
// console.log/info/debug, which all go to stderr from here on.
const stdout = process.stdout
for (const level of ['log', 'info', 'debug']) {
  console[level] = (...args) => console.error(...args)
}

// The PDS and PLC servers call `listen(port)`, which binds every interface.
// Bind loopback instead whenever no host is given.
const originalListen = net.Server.prototype.listen
net.Server.prototype.listen = function (...args) {
  const first = args[0]
  if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, LOOPBACK)
  } else if (first && typeof first === 'object' && first.path === undefined && first.host === undefined) {
    args[0] = { ...first, host: LOOPBACK }
  }
  return originalListen.apply(this, args)
}

// localhost (the PDS's public URL) must mean the loopback address we bind.
dns.setDefaultResultOrder('ipv4first')

// The last guard against reaching the internet: only local names resolve.
const LOCAL_NAMES = new Set(['localhost', '127.0.0.1', '::1'])
function isLocal(hostname) {
  return typeof hostname === 'string' && LOCAL_NAMES.has(hostname.toLowerCase())
}
function blocked(hostname) {
  log(`blocked a DNS query for ${JSON.stringify(hostname)} (no internet in tests)`)
  const err = new Error(`getaddrinfo ENOTFOUND ${hostname} (blocked by e2e/network.mjs)`)
  err.code = 'ENOTFOUND'
  err.hostname = hostname
  return err
}
const originalLookup = dns.lookup
dns.lookup = function (hostname, options, callback) {
  if (isLocal(hostname)) return originalLookup.call(this, hostname, options, callback)
  const cb = typeof options === 'function' ? options : callback
  process.nextTick(() => cb(blocked(hostname)))
  return {}
}
const originalPromisesLookup = dns.promises.lookup
dns.promises.lookup = async (hostname, options) => {
  if (isLocal(hostname)) return originalPromisesLookup(hostname, options)
  throw blocked(hostname)
}
for (const name of ['resolve', 'resolve4', 'resolve6', 'resolveTxt', 'resolveAny', 'resolveCname']) {
  dns[name] = (hostname, ...rest) => {
    const cb = rest[rest.length - 1]
    process.nextTick(() => cb(blocked(hostname)))
  }
  dns.promises[name] = async (hostname) => {
    throw blocked(hostname)
  }
  dns.promises.Resolver.prototype[name] = async (hostname) => {
    throw blocked(hostname)
  }
  dns.Resolver.prototype[name] = function (hostname, ...rest) {
    const cb = rest[rest.length - 1]
    process.nextTick(() => cb(blocked(hostname)))
  }
}

// --- the network --------------------------------------------------------------

const opts = parseArgs(process.argv.slice(2))

// The PDS keeps its SQLite files and blobs under os.tmpdir(): give it a
// directory of our own (under --tmpdir, default the system's) and remove it
// on close. skyhouse-testkit passes its watchdog's directory, which the
// watchdog removes even after a SIGKILL.
const baseTmp = opts.tmpdir || os.tmpdir()
const tmp = fs.mkdtempSync(path.join(baseTmp, 'skyhouse-e2e-'))
process.env.TMPDIR = tmp

const adminPassword = crypto.randomBytes(16).toString('hex')

const { TestNetworkNoAppView } = await import('@atproto/dev-env')

let network
try {
  network = await TestNetworkNoAppView.create({
    plc: opts.plcPort ? { port: opts.plcPort } : {},
    pds: {
      ...(opts.pdsPort ? { port: opts.pdsPort } : {}),
      adminPassword,
      crawlers: [],
      emailSmtpUrl: undefined,
      emailFromAddress: undefined,
      bskyAppViewUrl: 'https://appview.invalid',
      modServiceUrl: 'https://moderator.invalid',
    },
  })
} catch (err) {
  // The testkit retries on fresh ports when it sees this phrase.
  if (err && err.code === 'EADDRINUSE') log(`Address already in use: ${err.message}`)
  log(`cannot start the network: ${err && err.stack ? err.stack : err}`)
  fs.rmSync(tmp, { recursive: true, force: true })
  process.exit(1)
}

const info = {
  pds: `http://${LOOPBACK}:${network.pds.port}`,
  plc: `http://${LOOPBACK}:${network.plc.port}`,
  adminPassword,
  pdsPublicUrl: network.pds.ctx.cfg.service.publicUrl,
  pdsDid: network.pds.ctx.cfg.service.did,
  handleDomain: network.pds.ctx.cfg.identity.serviceHandleDomains[0],
}
stdout.write(`${JSON.stringify(info)}\n`)

let closing = false
async function shutdown(why) {
  if (closing) return
  closing = true
  log(`closing the network (${why})`)
  setTimeout(() => {
    log(`network did not close within ${CLOSE_GRACE_MS} ms; exiting anyway`)
    fs.rmSync(tmp, { recursive: true, force: true })
    process.exit(0)
  }, CLOSE_GRACE_MS).unref()
  try {
    await network.close()
  } catch (err) {
    log(`error while closing: ${err}`)
  }
  fs.rmSync(tmp, { recursive: true, force: true })
  process.exit(0)
}

process.on('SIGTERM', () => shutdown('SIGTERM'))
process.on('SIGINT', () => shutdown('SIGINT'))
if (!opts.ignoreStdin) {
  process.stdin.on('end', () => shutdown('stdin closed'))
  process.stdin.on('error', () => shutdown('stdin error'))
  process.stdin.resume()
}
