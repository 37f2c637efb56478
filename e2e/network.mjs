// A real AT Protocol network on loopback for skyhouse's end-to-end tests.
//
// Default mode: @atproto/dev-env's TestNetworkNoAppView, i.e. an in-memory
// PLC directory and the reference PDS on SQLite, nothing else (no AppView,
// no relay).
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
// AppView mode (--appview): dev-env's TestNetwork, which adds the reference
// AppView (@atproto/bsky: API server, data plane, and a firehose
// subscription to the PDS) and Ozone (the moderation service the PDS and
// AppView are wired to) on a PostgreSQL server the caller runs:
//
//   node e2e/network.mjs --appview --postgres-url postgresql://… [--bsky-port B]
//       [--ozone-port O] [--control-port C] [--pds-port P] [--plc-port Q] …
//
// Each run uses PostgreSQL schemas of its own (`appview_<schema>`,
// `ozone_<schema>`, printed), so several networks can share one server.
// The JSON line then also has "appview", "appviewDid", "appviewAdminPassword",
// "ozone", "ozoneDid", "postgresSchema" and "control": a small HTTP server
// on loopback whose
//
//   GET  /health       answers 200 once the network is up;
//   POST /process-all  waits until the AppView has indexed everything the PDS
//                      sequenced (dev-env's network.processAll()), then 200
//                      {"ms":N}; 500 if it did not within ?timeout_ms=
//                      (default 120000);
//   POST /service-auth?iss=DID&aud=DID&lxm=NSID  a service-auth JWT signed
//                      with the key of the PDS account `iss` (dev-env's
//                      network.serviceHeaders(); works for deactivated
//                      accounts too; aud defaults to the AppView's DID):
//                      200 {"token":"…"};
//   POST /feedgen-did?endpoint=URL  a new did:plc in the test PLC whose
//                      document names URL (a loopback http URL) as its
//                      #bsky_fg BskyFeedGenerator service, as dev-env's
//                      TestFeedGen makes: 200 {"did":"did:plc:…"}.
//
// Errors answer {"error":"<Name>","message":"…"} like XRPC.
//
// Nothing here may reach the internet (CI machines have none, and a test must
// not depend on it): servers bind 127.0.0.1 only, handles live under `.test`
// (resolved by dev-env against this PDS, no DNS), no crawlers (relays) are
// configured, e-mail is never sent (no SMTP URL: the PDS only logs mails), the
// AppView and moderation URLs are `.invalid` (in AppView mode: the local
// AppView and Ozone), and as a last guard every DNS query for a name other
// than localhost fails at once with a line on stderr.

import crypto from 'node:crypto'
import dns from 'node:dns'
import fs from 'node:fs'
import http from 'node:http'
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
  log('       node network.mjs --appview --postgres-url URL [--bsky-port B] [--ozone-port O] [--control-port C] [...]')
  process.exit(2)
}

const PORT_FLAGS = {
  '--pds-port': 'pdsPort',
  '--plc-port': 'plcPort',
  '--bsky-port': 'bskyPort',
  '--ozone-port': 'ozonePort',
  '--control-port': 'controlPort',
}

function parseArgs(argv) {
  const opts = {
    pdsPort: 0,
    plcPort: 0,
    bskyPort: 0,
    ozonePort: 0,
    controlPort: 0,
    tmpdir: undefined,
    ignoreStdin: false,
    appview: false,
    postgresUrl: process.env.DB_POSTGRES_URL,
  }
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]
    if (arg === '--ignore-stdin') {
      opts.ignoreStdin = true
    } else if (arg === '--appview') {
      opts.appview = true
    } else if (arg === '--tmpdir') {
      opts.tmpdir = argv[++i]
      if (!opts.tmpdir) usage('--tmpdir needs a directory')
    } else if (arg === '--postgres-url') {
      opts.postgresUrl = argv[++i]
      if (!opts.postgresUrl) usage('--postgres-url needs a postgresql:// URL')
    } else if (arg in PORT_FLAGS) {
      const value = argv[++i]
      const port = Number(value)
      if (!Number.isInteger(port) || port < 0 || port > 65535) {
        usage(`${arg}: not a port: ${value}`)
      }
      opts[PORT_FLAGS[arg]] = port
    } else {
      usage(`unknown argument: ${arg}`)
    }
  }
  if (opts.appview && !opts.postgresUrl) {
    usage('--appview needs --postgres-url (or DB_POSTGRES_URL)')
  }
  if (!opts.appview) {
    for (const flag of ['--bsky-port', '--ozone-port', '--control-port']) {
      if (opts[PORT_FLAGS[flag]]) usage(`${flag} needs --appview`)
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

// What both modes give the PDS: loopback only, no crawlers, no e-mail.
const pdsParams = {
  ...(opts.pdsPort ? { port: opts.pdsPort } : {}),
  adminPassword,
  crawlers: [],
  emailSmtpUrl: undefined,
  emailFromAddress: undefined,
}

// A PostgreSQL schema name of our own: @atproto/bsky accepts [A-Za-z_] only.
function schemaName() {
  const letters = 'abcdefghijklmnopqrstuvwxyz'
  const bytes = crypto.randomBytes(12)
  return 'sky' + Array.from(bytes, (b) => letters[b % 26]).join('')
}

async function createNetwork() {
  const devEnv = await import('@atproto/dev-env')
  if (!opts.appview) {
    const network = await devEnv.TestNetworkNoAppView.create({
      plc: opts.plcPort ? { port: opts.plcPort } : {},
      pds: {
        ...pdsParams,
        bskyAppViewUrl: 'https://appview.invalid',
        modServiceUrl: 'https://moderator.invalid',
      },
    })
    return { network, extra: {} }
  }
  // dev-env asserts REDIS_HOST is set and hands it to the AppView's config,
  // but @atproto/bsky 0.0.221 never connects to it (nor does Ozone). Should
  // a later version try, the DNS guard above blocks the name with a line on
  // stderr.
  process.env.REDIS_HOST = process.env.REDIS_HOST || 'redis-unused.invalid'
  const schema = schemaName()
  const network = await devEnv.TestNetwork.create({
    dbPostgresUrl: opts.postgresUrl,
    dbPostgresSchema: schema,
    plc: opts.plcPort ? { port: opts.plcPort } : {},
    pds: pdsParams,
    bsky: opts.bskyPort ? { port: opts.bskyPort } : {},
    ozone: opts.ozonePort ? { port: opts.ozonePort } : {},
  })
  const extra = {
    appview: `http://${LOOPBACK}:${network.bsky.port}`,
    appviewDid: network.bsky.ctx.cfg.serverDid,
    appviewAdminPassword: network.bsky.ctx.cfg.adminPasswords[0],
    ozone: `http://${LOOPBACK}:${network.ozone.port}`,
    ozoneDid: network.ozone.ctx.cfg.service.did,
    postgresSchema: schema,
  }
  return { network, extra }
}

const started = Date.now()
let network
let extra
try {
  ;({ network, extra } = await createNetwork())
} catch (err) {
  // The testkit retries on fresh ports when it sees this phrase.
  if (err && err.code === 'EADDRINUSE') log(`Address already in use: ${err.message}`)
  log(`cannot start the network: ${err && err.stack ? err.stack : err}`)
  fs.rmSync(tmp, { recursive: true, force: true })
  process.exit(1)
}
log(`network up in ${Date.now() - started} ms`)

// --- the control server (AppView mode) ----------------------------------------

// processAll calls run one at a time.
let queue = Promise.resolve()
function serialized(fn) {
  const run = queue.then(fn, fn)
  queue = run.catch(() => {})
  return run
}

function reply(res, status, body) {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

async function control(req, res) {
  const url = new URL(req.url, `http://${LOOPBACK}`)
  if (req.method === 'GET' && url.pathname === '/health') {
    return reply(res, 200, { ok: true })
  }
  if (req.method === 'POST' && url.pathname === '/process-all') {
    const timeout = Number(url.searchParams.get('timeout_ms') || 120000)
    if (!Number.isInteger(timeout) || timeout <= 0) {
      return bad(res, `timeout_ms: not a positive integer: ${url.searchParams.get('timeout_ms')}`)
    }
    const t0 = Date.now()
    await serialized(() => network.processAll(timeout))
    return reply(res, 200, { ms: Date.now() - t0 })
  }
  if (req.method === 'POST' && url.pathname === '/service-auth') {
    const iss = url.searchParams.get('iss')
    if (!iss || !iss.startsWith('did:')) {
      return bad(res, `iss: not a DID: ${iss}`)
    }
    const aud = url.searchParams.get('aud') || undefined
    const lxm = url.searchParams.get('lxm') || undefined
    const headers = await network.serviceHeaders(iss, lxm, aud)
    return reply(res, 200, { token: headers.authorization.replace(/^Bearer /, '') })
  }
  if (req.method === 'POST' && url.pathname === '/feedgen-did') {
    const endpoint = url.searchParams.get('endpoint')
    let parsed
    try {
      parsed = new URL(endpoint)
    } catch {
      return bad(res, `endpoint: not a URL: ${endpoint}`)
    }
    if (parsed.protocol !== 'http:' || !isLocal(parsed.hostname)) {
      return bad(res, `endpoint: not a loopback http URL: ${endpoint}`)
    }
    return reply(res, 200, { did: await feedgenDid(endpoint) })
  }
  return reply(res, 404, { error: 'NotFound', message: `no such control route: ${req.method} ${url.pathname}` })
}

function bad(res, message) {
  return reply(res, 400, { error: 'InvalidRequest', message })
}

// A did:plc naming `endpoint` as its feed generator service (what dev-env's
// TestFeedGen does for the servers it starts itself).
async function feedgenDid(endpoint) {
  const plc = await import('@did-plc/lib')
  const { Secp256k1Keypair } = await import('@atproto/crypto')
  const keypair = await Secp256k1Keypair.create()
  const op = await plc.signOperation(
    {
      type: 'plc_operation',
      verificationMethods: { atproto: keypair.did() },
      rotationKeys: [keypair.did()],
      alsoKnownAs: [],
      services: { bsky_fg: { type: 'BskyFeedGenerator', endpoint } },
      prev: null,
    },
    keypair,
  )
  const did = await plc.didForCreateOp(op)
  await new plc.Client(network.plc.url).sendOperation(did, op)
  return did
}

let controlServer
if (opts.appview) {
  controlServer = http.createServer((req, res) => {
    control(req, res).catch((err) => {
      log(`control ${req.method} ${req.url} failed: ${err && err.stack ? err.stack : err}`)
      reply(res, 500, { error: 'ControlFailed', message: String(err && err.message ? err.message : err) })
    })
  })
  try {
    await new Promise((resolve, reject) => {
      controlServer.once('error', reject)
      controlServer.listen(opts.controlPort, LOOPBACK, resolve)
    })
  } catch (err) {
    if (err && err.code === 'EADDRINUSE') log(`Address already in use: ${err.message}`)
    log(`cannot start the control server: ${err}`)
    await network.close().catch(() => {})
    fs.rmSync(tmp, { recursive: true, force: true })
    process.exit(1)
  }
  extra.control = `http://${LOOPBACK}:${controlServer.address().port}`
}

const info = {
  pds: `http://${LOOPBACK}:${network.pds.port}`,
  plc: `http://${LOOPBACK}:${network.plc.port}`,
  adminPassword,
  pdsPublicUrl: network.pds.ctx.cfg.service.publicUrl,
  pdsDid: network.pds.ctx.cfg.service.did,
  handleDomain: network.pds.ctx.cfg.identity.serviceHandleDomains[0],
  ...extra,
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
    controlServer?.close()
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
