#!/usr/bin/env node
// Generate a realistic event stream for the indexer benchmark, twice: as
// firehose frames and as the Jetstream events of the same operations.
//
//   node gen-stream.mjs OUT_PREFIX [N_EVENTS=1000000] [SEED=20260101] [DIDS=3000]
//
// writes
//   OUT_PREFIX.frames    N_EVENTS firehose frames, each `[u32 BE length][frame]`
//                        (what `skyhouse indexer --source firehose --url file://…` replays)
//   OUT_PREFIX.jsonl     the same events as Jetstream v1 JSON lines (one per op)
//   OUT_PREFIX.dids.json { DID: did:key } of every account, for `--verify` offline
//
// The stream: DIDS did:plc accounts (activity skewed: a few post a lot), 90%
// secp256k1 and 10% P-256 signing keys. ~99% of the frames are `#commit`s,
// the rest `#identity` (handle changes) and `#account` (deactivations and
// reactivations, a few deletions). Ops mix close to the network's: ~50% likes,
// ~15% posts (langs, facets, replies, quotes, images, links, videos), ~12%
// reposts, ~9% follows, blocks, list items, profile updates, and ~7% deletes
// of the account's own earlier records; 2% of commits carry 2–4 ops.
//
// Each `#commit` is a sync 1.1 frame: seq, repo, commit, rev, since,
// prevData (the previous commit's MST root, so chains are continuous), time,
// ops (with `prev` for updates and deletes), and `blocks`, a CAR slice with
// the signed commit block (version 3, DAG-CBOR, low-S ECDSA over its SHA-256),
// the record blocks, and the MST nodes on the path from the root to each
// key. The path nodes are well formed and hash-linked (root = commit.data,
// each node links the next, the leaf holds the op's key and record CID) and
// the path is as deep as a real tree of the account's size, but their other
// entries are random: the nodes of consecutive commits are not one
// persistent tree (the indexer reads records by CID and does not invert the
// MST; building the real tree per commit with @atproto/repo runs ~1k
// commits/s, too slow for millions of events).
//
// Speed: signing dominates. secp256k1 signatures use @noble/curves with
// SEQUENTIAL nonces (k, k+1, …: one point addition per signature instead of a
// scalar multiplication). That leaks the private key to anyone holding two
// signatures: fine for throwaway benchmark keys, never for real ones. P-256
// uses node's OpenSSL. About 1M frames/min on one core.
//
// Deterministic except for the P-256 signatures (OpenSSL picks random nonces).

import { closeSync, mkdirSync, openSync, writeFileSync, writeSync } from 'node:fs'
import { createHash, createPrivateKey, sign as osslSign } from 'node:crypto'
import { dirname } from 'node:path'
import { TID } from '@atproto/common-web'
import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto'
import { encode as cborEncode } from '@atproto/lex-cbor'
import { createCid } from '@atproto/lex-data'
import { secp256k1 } from '@noble/curves/secp256k1'
import { Field, FpInvertBatch, mod } from '@noble/curves/abstract/modular'
import { normalizeZ } from '@noble/curves/abstract/curve'
import { makeRng } from './records.mjs'

const USAGE = 'usage: node gen-stream.mjs OUT_PREFIX [N_EVENTS=1000000] [SEED=20260101] [DIDS=3000]'
const [outPrefix, nArg, seedArg, didsArg] = process.argv.slice(2)
if (!outPrefix || outPrefix === '-h' || outPrefix === '--help') {
  console.error(USAGE)
  process.exit(2)
}
const N = nArg === undefined ? 1_000_000 : Number(nArg.replaceAll('_', ''))
const SEED = seedArg === undefined ? 20260101 : Number(seedArg)
const NDIDS = didsArg === undefined ? 3000 : Number(didsArg)
if (![N, SEED, NDIDS].every(Number.isInteger) || N < 10 || NDIDS < 2) {
  console.error(USAGE + '\n(N_EVENTS >= 10, DIDS >= 2, integers)')
  process.exit(2)
}

// ---------------------------------------------------------------- PRNG
// sfc32 seeded through splitmix32: records.mjs's, as gen-car.mjs uses it.
const u32 = makeRng(SEED)
const rand = () => u32() / 4294967296
const int = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1)) // inclusive
const chance = (p) => rand() < p
const pick = (arr) => arr[Math.floor(rand() * arr.length)]
const bytes32 = () => {
  const b = new Uint8Array(32)
  for (let i = 0; i < 32; i += 4) {
    const v = u32()
    b[i] = v & 0xff
    b[i + 1] = (v >>> 8) & 0xff
    b[i + 2] = (v >>> 16) & 0xff
    b[i + 3] = v >>> 24
  }
  return b
}
function weighted(table) {
  let r = rand() * table.total
  for (const [v, w] of table) {
    r -= w
    if (r < 0) return v
  }
  return table[table.length - 1][0]
}
const table = (rows) => Object.assign(rows, { total: rows.reduce((s, [, w]) => s + w, 0) })

// ---------------------------------------------------------------- CIDs, blocks
const DAG_CBOR = 0x71
const RAW = 0x55
const SHA256 = 0x12
const sha256 = (bytes) => createHash('sha256').update(bytes).digest()
const randomCid = () => createCid(DAG_CBOR, SHA256, bytes32())
const block = (value) => {
  const bytes = cborEncode(value)
  const digest = sha256(bytes)
  return { cid: createCid(DAG_CBOR, SHA256, digest), digest, bytes }
}
const blob = (mimeType, size) => ({ $type: 'blob', ref: createCid(RAW, SHA256, bytes32()), mimeType, size })

function varint(n) {
  const out = []
  while (n >= 0x80) {
    out.push((n & 0x7f) | 0x80)
    n >>>= 7
  }
  out.push(n)
  return out
}
// A CARv1 with `root` and `blocks` ({cid, bytes}), as a PDS puts in a commit frame.
function carSlice(root, blocks) {
  const header = cborEncode({ version: 1, roots: [root] })
  const parts = [Uint8Array.from(varint(header.length)), header]
  for (const b of blocks) {
    const cid = b.cid instanceof Uint8Array ? b.cid : b.cid.bytes
    parts.push(Uint8Array.from(varint(cid.length + b.bytes.length)), cid, b.bytes)
  }
  return Buffer.concat(parts)
}

// ---------------------------------------------------------------- signing
const N_K1 = secp256k1.CURVE.n
const G = secp256k1.ProjectivePoint.BASE
const toBig = (bytes) => BigInt('0x' + Buffer.from(bytes).toString('hex'))
const big32 = (n) => Buffer.from(n.toString(16).padStart(64, '0'), 'hex')
// Sequential nonces, see the header: R = k·G follows k by one point
// addition; x(R) and 1/k are computed for NONCE_BATCH nonces at a time with
// one field inversion each (Montgomery's trick).
const NONCE_BATCH = 512
const Fn = Field(N_K1)
let nonceK = mod(toBig(bytes32()), N_K1)
let nonceR = G.multiply(nonceK)
let nonces = [] // [r, 1/k]
function refillNonces() {
  const ks = []
  const points = []
  for (let i = 0; i < NONCE_BATCH; i++) {
    nonceK = mod(nonceK + 1n, N_K1)
    nonceR = nonceR.add(G)
    ks.push(nonceK)
    points.push(nonceR)
  }
  const affine = normalizeZ(secp256k1.ProjectivePoint, points)
  const inv = FpInvertBatch(Fn, ks)
  nonces = affine.map((p, i) => [mod(p.x, N_K1), inv[i]]).reverse()
}
function signK256(d, digest) {
  if (nonces.length === 0) refillNonces()
  const [r, kInv] = nonces.pop()
  let s = mod(kInv * (toBig(digest) + r * d), N_K1)
  if (s > N_K1 >> 1n) s = N_K1 - s // low-S, as atproto requires
  return Buffer.concat([big32(r), big32(s)])
}
const N_P256 = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n
const P256_PKCS8 = Buffer.from('3041020100301306072a8648ce3d020106082a8648ce3d030107042730250201010420', 'hex')
function signP256(key, bytes) {
  const sig = osslSign('sha256', bytes, { key, dsaEncoding: 'ieee-p1363' })
  const s = toBig(sig.subarray(32))
  if (s <= N_P256 >> 1n) return sig
  return Buffer.concat([sig.subarray(0, 32), big32(N_P256 - s)])
}

// ---------------------------------------------------------------- accounts
const B32 = 'abcdefghijklmnopqrstuvwxyz234567'
const plcDid = () => {
  let s = 'did:plc:'
  for (let i = 0; i < 24; i++) s += B32[u32() & 31]
  return s
}
const HANDLE_WORDS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy', 'mallory', 'oscar']
const handle = () => `${pick(HANDLE_WORDS)}${int(1, 99999)}.${chance(0.8) ? 'bsky.social' : pick(['example.com', 'example.org'])}`

const accounts = []
const didKeys = {}
for (let i = 0; i < NDIDS; i++) {
  const priv = bytes32()
  const p256 = chance(0.1)
  const kp = await (p256 ? P256Keypair : Secp256k1Keypair).import(priv)
  const acct = {
    did: plcDid(),
    sign: p256
      ? ((key) => (bytes) => signP256(key, bytes))(
          createPrivateKey({ key: Buffer.concat([P256_PKCS8, priv]), format: 'der', type: 'pkcs8' }),
        )
      : ((d) => (bytes) => signK256(d, sha256(bytes)))(mod(toBig(priv), N_K1)),
    rev: null, // last commit rev
    data: null, // last MST root
    records: 0, // records in the repository (sets the MST depth)
    own: [], // recent [collection, rkey, cid] for deletes
    hasProfile: false,
    profileCid: null,
    active: true,
    deleted: false,
  }
  acct.records = Math.floor(200 * Math.exp(rand() * 6)) // 200 .. 80k records already
  accounts.push(acct)
  didKeys[acct.did] = kp.did()
}
// A few accounts do most of the writing (as on the network).
const activeAccount = () => {
  for (;;) {
    const a = accounts[Math.floor(accounts.length * rand() ** 2.5)]
    if (!a.deleted) return a
  }
}
// Subjects of likes, replies, follows: accounts here plus a wider pool.
const POOL = Array.from({ length: 20000 }, (_, i) => (i < accounts.length ? accounts[i].did : plcDid()))
const poolDid = () => POOL[Math.floor(POOL.length * rand() ** 2)]

// ---------------------------------------------------------------- time
// Events 20–80 µs apart from 2025-11-01 on: Jetstream's time_us and the
// frames' `time` increase together.
let nowUs = Date.UTC(2025, 10, 1) * 1000
const CLOCK_ID = 3
const tidAt = (us) => TID.fromTime(us, CLOCK_ID).toString()
const isoAt = (us) => new Date(Math.floor(us / 1000)).toISOString()
const pastTid = (us) => TID.fromTime(us - int(1, 30 * 86400) * 1e6 - int(0, 999999), int(0, 31)).toString()
const strongRef = (us, collection = 'app.bsky.feed.post') => ({
  uri: `at://${poolDid()}/${collection}/${pastTid(us)}`,
  cid: randomCid().toString(),
})

// ---------------------------------------------------------------- text
const WORDS = {
  en: 'the a and to of in is it you that for on this with just so but be my are not have me like was what at all do your can if about out its one from they get more good time people think today know really new see would now day first back been some how much love going still make great need very want thanks why only over here year work night feel look way thing right well even best also made post read week world home game little never lol yeah sure maybe actually weird cool'.split(' '),
  ja: 'こんにちは 今日 ありがとう 本当に すごい かわいい 明日 写真 猫 ラーメン 東京 天気 仕事 楽しい 眠い 映画 ゲーム 日本 です ます。 ね！ 笑'.split(' '),
  pt: 'olá obrigado hoje não você muito bom dia então também café saudade coração amanhã está são ação pão avó'.split(' '),
  de: 'und nicht heute schön Grüße über Straße Mädchen früh müde Käse wirklich vielleicht genau danke'.split(' '),
  es: 'hola gracias mañana também niño corazón qué bueno día así año está canción señor fútbol'.split(' '),
}
const LANG_TABLE = table([['en', 68], ['ja', 12], ['pt', 9], ['de', 5], ['es', 5], [null, 1]])
const FACET_TABLE = table([['mention', 5], ['link', 3], ['tag', 2]])
const EMOJI = ['😂', '❤️', '🔥', '🙏', '✨', '🦋', '👀', '🎉', '😭', '🥲']
const TAGS = ['art', 'photography', 'rustlang', 'bluesky', 'cats', 'music', 'science', 'books', 'gamedev', 'news']
const WEB_HOSTS = ['example.com', 'example.org', 'example.net', 'blog.example.com']
const utf8Len = (s) => Buffer.byteLength(s, 'utf8')

function postText(lang, target, withFacets) {
  const words = WORDS[lang ?? 'en']
  let text = ''
  let bytes = 0
  const facets = []
  let wantFacets = withFacets ? int(1, 3) : 0
  for (;;) {
    let tok
    let feature
    if (wantFacets > 0 && chance(0.15)) {
      wantFacets--
      const kind = weighted(FACET_TABLE)
      if (kind === 'mention') {
        tok = `@${handle()}`
        feature = { $type: 'app.bsky.richtext.facet#mention', did: poolDid() }
      } else if (kind === 'link') {
        const uri = `https://${pick(WEB_HOSTS)}/${pick(WORDS.en)}/${int(1000, 99999)}`
        tok = uri.length > 30 ? uri.slice(8, 30) + '...' : uri.slice(8)
        feature = { $type: 'app.bsky.richtext.facet#link', uri }
      } else {
        const tag = pick(TAGS)
        tok = '#' + tag
        feature = { $type: 'app.bsky.richtext.facet#tag', tag }
      }
    } else if (chance(0.04)) {
      tok = pick(EMOJI)
    } else {
      tok = pick(words)
    }
    if (text.length + 1 + tok.length > target && text.length >= 10) break
    if (text.length + 1 + tok.length > 300) break
    const sep = text.length === 0 ? '' : ' '
    text += sep + tok
    const start = bytes + utf8Len(sep)
    bytes = start + utf8Len(tok)
    if (feature) facets.push({ index: { byteStart: start, byteEnd: bytes }, features: [feature] })
  }
  return { text, facets }
}

function images(n) {
  return {
    $type: 'app.bsky.embed.images',
    images: Array.from({ length: n }, () => {
      const width = pick([640, 800, 1000, 1080, 1200, 1536, 2000])
      return {
        alt: chance(0.4) ? postText('en', int(20, 120), false).text : '',
        image: blob(chance(0.9) ? 'image/jpeg' : 'image/png', int(40_000, 1_000_000)),
        aspectRatio: { width, height: Math.round(width * pick([0.5625, 0.75, 1, 1.333, 1.777])) },
      }
    }),
  }
}
const EMBED_TABLE = table([['images', 12], ['external', 5], ['record', 4], ['video', 2], ['recordWithMedia', 1]])
const IMAGES_TABLE = table([[1, 70], [2, 15], [3, 7], [4, 8]])
function embed(us) {
  switch (weighted(EMBED_TABLE)) {
    case 'images':
      return images(weighted(IMAGES_TABLE))
    case 'external': {
      const external = {
        uri: `https://${pick(WEB_HOSTS)}/articles/${int(1, 1e6)}`,
        title: postText('en', int(20, 90), false).text,
        description: postText('en', int(20, 200), false).text,
      }
      if (chance(0.7)) external.thumb = blob('image/jpeg', int(10_000, 900_000))
      return { $type: 'app.bsky.embed.external', external }
    }
    case 'record':
      return { $type: 'app.bsky.embed.record', record: strongRef(us) }
    case 'video':
      return { $type: 'app.bsky.embed.video', video: blob('video/mp4', int(500_000, 50_000_000)), aspectRatio: { width: 1920, height: 1080 } }
    default:
      return {
        $type: 'app.bsky.embed.recordWithMedia',
        record: { $type: 'app.bsky.embed.record', record: strongRef(us) },
        media: images(int(1, 2)),
      }
  }
}

function makePost(us) {
  const lang = weighted(LANG_TABLE)
  const target = 20 + Math.floor(280 * rand() ** 2)
  const { text, facets } = postText(lang, target, chance(0.15))
  const rec = { $type: 'app.bsky.feed.post', text, createdAt: isoAt(us) }
  if (lang && chance(0.85)) rec.langs = chance(0.05) ? [lang, 'en'] : [lang]
  if (facets.length > 0) rec.facets = facets
  if (chance(0.3)) {
    const parent = strongRef(us)
    rec.reply = { root: chance(0.5) ? parent : strongRef(us), parent }
  }
  if (chance(0.24)) rec.embed = embed(us)
  return rec
}

function makeRecord(collection, acct, us) {
  const createdAt = isoAt(us)
  switch (collection) {
    case 'app.bsky.feed.like':
      return { $type: collection, subject: chance(0.01) ? strongRef(us, 'app.bsky.feed.generator') : strongRef(us), createdAt }
    case 'app.bsky.feed.post':
      return makePost(us)
    case 'app.bsky.feed.repost':
      return { $type: collection, subject: strongRef(us), createdAt }
    case 'app.bsky.graph.follow':
    case 'app.bsky.graph.block':
      return { $type: collection, subject: poolDid(), createdAt }
    case 'app.bsky.graph.listitem':
      return { $type: collection, subject: poolDid(), list: `at://${acct.did}/app.bsky.graph.list/${pastTid(us)}`, createdAt }
    case 'app.bsky.actor.profile': {
      const p = { $type: collection, displayName: `${pick(HANDLE_WORDS)} ${pick(EMOJI)}`, description: postText('en', int(20, 200), false).text, createdAt }
      if (chance(0.8)) p.avatar = blob('image/jpeg', int(20_000, 900_000))
      if (chance(0.5)) p.banner = blob('image/jpeg', int(50_000, 900_000))
      return p
    }
    default:
      throw new Error(`unknown collection ${collection}`)
  }
}

// ---------------------------------------------------------------- lex-JSON
// Records hold CIDs only as blob refs; strings, numbers, arrays otherwise.
function lexJson(v) {
  if (Array.isArray(v)) return v.map(lexJson)
  if (v !== null && typeof v === 'object') {
    if (v.bytes instanceof Uint8Array && typeof v.code === 'number') return { $link: v.toString() }
    const o = {}
    for (const k of Object.keys(v)) o[k] = lexJson(v[k])
    return o
  }
  return v
}

// ---------------------------------------------------------------- MST path
// Nodes from the root down to the key: 2–6 entries each (the tree's fanout
// is 4), depth log4(records). Entry keys share the op's collection prefix.
// Nodes are DAG-CBOR written by hand ({e: [{k, p, t, v}…], l}, keys in
// canonical order): cborg spends ~20 µs on each, this ~2 µs.
const CID_PREFIX = Buffer.from([0xd8, 0x2a, 0x58, 0x25, 0x00, 0x01, DAG_CBOR, SHA256, 0x20])
// Digests of the random entries: 32-byte windows of a random pool (no
// allocation per entry).
const RANDOM_POOL = Buffer.concat(Array.from({ length: 1 << 14 }, bytes32))
const randomDigest = () => RANDOM_POOL.subarray((u32() >>> 0) % (RANDOM_POOL.length - 32)).subarray(0, 32)
const B32_SORT = '234567abcdefghijklmnopqrstuvwxyz'
// A TID-shaped key of someone's older record.
const oldTid = () => {
  let s = '3' + B32_SORT[10 + (u32() % 4)]
  for (let i = 0; i < 11; i++) s += B32_SORT[u32() & 31]
  return s
}
const scratch = Buffer.alloc(1 << 16)
let at = 0
const byte = (b) => {
  scratch[at++] = b
}
const head = (major, n) => {
  if (n < 24) byte((major << 5) | n)
  else if (n < 256) {
    byte((major << 5) | 24)
    byte(n)
  } else {
    byte((major << 5) | 25)
    byte(n >> 8)
    byte(n & 0xff)
  }
}
const key1 = (c) => {
  byte(0x61)
  byte(c.charCodeAt(0))
}
const cidOrNull = (digest) => {
  if (digest === null) return byte(0xf6)
  CID_PREFIX.copy(scratch, at)
  at += CID_PREFIX.length
  digest.copy(scratch, at)
  at += 32
}
function mstNode(entries, left) {
  at = 0
  byte(0xa2)
  key1('e')
  head(4, entries.length)
  for (const e of entries) {
    byte(0xa4)
    key1('k')
    head(2, e.k.length) // keys are ASCII
    at += scratch.write(e.k, at, 'latin1')
    key1('p')
    head(0, e.p)
    key1('t')
    cidOrNull(e.t)
    key1('v')
    cidOrNull(e.v)
  }
  key1('l')
  cidOrNull(left)
  const bytes = Buffer.from(scratch.subarray(0, at))
  const digest = sha256(bytes)
  return { cid: Buffer.concat([CID_PREFIX.subarray(5), digest]), digest, bytes }
}
function mstPath(acct, key, recordDigest) {
  const depth = Math.max(1, Math.min(9, Math.ceil(Math.log(acct.records + 1) / Math.log(4))))
  const blocks = []
  let child = null
  const prefix = key.slice(0, key.indexOf('/') + 1)
  for (let level = 0; level < depth; level++) {
    const n = int(2, 6)
    const keys = [key]
    for (let i = 1; i < n; i++) keys.push(prefix + oldTid())
    keys.sort()
    const pos = level === 0 ? keys.indexOf(key) : int(0, n - 1) // our key (leaf) or the child link (inner)
    const entries = []
    let prev = ''
    for (let i = 0; i < n; i++) {
      const k = keys[i]
      let p = 0
      while (p < prev.length && p < k.length && prev[p] === k[p]) p++
      entries.push({
        k: k.slice(p),
        p,
        t: level > 0 && i === pos ? child : level > 0 && chance(0.7) ? randomDigest() : null,
        v: level === 0 && i === pos ? recordDigest : randomDigest(),
      })
      prev = k
    }
    const node = mstNode(entries, level > 0 && chance(0.5) ? randomDigest() : null)
    blocks.push(node)
    child = node.digest
  }
  return { root: createCid(DAG_CBOR, SHA256, child), blocks }
}

// ---------------------------------------------------------------- output
class Out {
  constructor(path) {
    mkdirSync(dirname(path), { recursive: true })
    this.fd = openSync(path, 'w')
    this.parts = []
    this.size = 0
    this.total = 0
  }
  write(buf) {
    this.parts.push(buf)
    this.size += buf.length
    this.total += buf.length
    if (this.size >= 8 << 20) this.flush()
  }
  flush() {
    if (this.size > 0) writeSync(this.fd, Buffer.concat(this.parts, this.size))
    this.parts = []
    this.size = 0
  }
  close() {
    this.flush()
    closeSync(this.fd)
  }
}
const frames = new Out(`${outPrefix}.frames`)
const jsonl = new Out(`${outPrefix}.jsonl`)
function writeFrame(t, body) {
  const bytes = Buffer.concat([cborEncode({ op: 1, t }), cborEncode(body)])
  const len = Buffer.alloc(4)
  len.writeUInt32BE(bytes.length)
  frames.write(len)
  frames.write(bytes)
}
const writeJson = (event) => jsonl.write(Buffer.from(JSON.stringify(event) + '\n'))

// ---------------------------------------------------------------- events
const OP_TABLE = table([
  ['app.bsky.feed.like', 500],
  ['app.bsky.feed.post', 150],
  ['app.bsky.feed.repost', 120],
  ['app.bsky.graph.follow', 90],
  ['delete', 70],
  ['app.bsky.graph.block', 15],
  ['app.bsky.graph.listitem', 10],
  ['app.bsky.actor.profile', 15],
])
const OWN_KEEP = 64
const counts = new Map()
const bump = (k) => counts.set(k, (counts.get(k) ?? 0) + 1)
let seq = 1_000_000_000
let jsonLines = 0
const started = performance.now()

function commit(acct) {
  const rev = tidAt(nowUs)
  const nOps = chance(0.02) ? int(2, 4) : 1
  const ops = []
  const recordBlocks = []
  const jsonOps = []
  for (let i = 0; i < nOps; i++) {
    let kind = weighted(OP_TABLE)
    if (kind === 'delete' && acct.own.length === 0) kind = 'app.bsky.feed.like'
    if (kind === 'delete') {
      const [collection, rkey, cid] = acct.own.splice(Math.floor(rand() * acct.own.length), 1)[0]
      ops.push({ action: 'delete', path: `${collection}/${rkey}`, cid: null, prev: cid })
      jsonOps.push({ rev, operation: 'delete', collection, rkey })
      acct.records = Math.max(0, acct.records - 1)
      bump(`delete ${collection}`)
      continue
    }
    const collection = kind
    const us = nowUs + i
    const record = makeRecord(collection, acct, us)
    const b = block(record)
    recordBlocks.push(b)
    let action = 'create'
    let rkey = tidAt(us + 1)
    let prev
    if (collection === 'app.bsky.actor.profile') {
      rkey = 'self'
      action = acct.hasProfile ? 'update' : 'create'
      prev = acct.profileCid ?? undefined
      acct.hasProfile = true
      acct.profileCid = b.cid
    } else {
      acct.records++
      acct.own.push([collection, rkey, b.cid])
      if (acct.own.length > OWN_KEEP) acct.own.shift()
    }
    const op = { action, path: `${collection}/${rkey}`, cid: b.cid }
    if (prev) op.prev = prev
    ops.push(op)
    jsonOps.push({ rev, operation: action, collection, rkey, record: lexJson(record), cid: b.cid.toString() })
    bump(`${action} ${collection}`)
  }
  // MST path of every op (the first one's path for deletes-only commits too).
  const mstBlocks = []
  let data = null
  for (const op of ops) {
    const path = mstPath(acct, op.path, op.cid ? Buffer.from(op.cid.multihash.digest) : randomDigest())
    if (data === null) data = path.root
    mstBlocks.push(...path.blocks)
  }
  const unsigned = { did: acct.did, version: 3, data, rev, prev: null }
  const sig = acct.sign(cborEncode(unsigned))
  const commitBlock = block({ ...unsigned, sig })
  writeFrame('#commit', {
    seq: seq++,
    rebase: false,
    tooBig: false,
    repo: acct.did,
    commit: commitBlock.cid,
    rev,
    since: acct.rev,
    blocks: carSlice(commitBlock.cid, [commitBlock, ...recordBlocks, ...mstBlocks]),
    ops: ops.map((o) => (o.prev ? o : { action: o.action, path: o.path, cid: o.cid })),
    blobs: [],
    prevData: acct.data,
    time: isoAt(nowUs),
  })
  jsonOps.forEach((c, i) => {
    writeJson({ did: acct.did, time_us: nowUs + i, kind: 'commit', commit: c })
    jsonLines++
  })
  acct.rev = rev
  acct.data = data
}

for (let i = 0; i < N; i++) {
  nowUs += int(20, 80)
  const r = rand()
  if (r < 0.005) {
    // handle change
    const acct = activeAccount()
    const h = handle()
    const time = isoAt(nowUs)
    writeFrame('#identity', { seq, did: acct.did, time, handle: h })
    writeJson({ did: acct.did, time_us: nowUs, kind: 'identity', identity: { did: acct.did, handle: h, seq, time } })
    seq++
    jsonLines++
    bump('#identity')
  } else if (r < 0.008) {
    // deactivate / reactivate (rarely: delete)
    const acct = activeAccount()
    const time = isoAt(nowUs)
    const deleting = acct.active && chance(0.02)
    const account = { active: false, did: acct.did, seq, time }
    if (deleting) {
      account.status = 'deleted'
      acct.deleted = true
    } else if (acct.active) {
      account.status = 'deactivated'
      acct.active = false
    } else {
      account.active = true
      acct.active = true
    }
    const body = { seq, did: acct.did, time, active: account.active }
    if (account.status) body.status = account.status
    writeFrame('#account', body)
    writeJson({ did: acct.did, time_us: nowUs, kind: 'account', account })
    seq++
    jsonLines++
    bump(`#account ${account.status ?? 'active'}`)
  } else {
    // a deactivated account writes nothing
    let acct = activeAccount()
    while (!acct.active) acct = activeAccount()
    commit(acct)
    bump('#commit')
  }
  if ((i + 1) % 200_000 === 0) {
    const s = (performance.now() - started) / 1000
    console.error(`  ${i + 1} frames, ${s.toFixed(0)} s`)
  }
}
frames.close()
jsonl.close()
writeFileSync(`${outPrefix}.dids.json`, JSON.stringify(didKeys, null, 0) + '\n')
const secs = (performance.now() - started) / 1000

const breakdown = [...counts.entries()]
  .sort((a, b) => b[1] - a[1])
  .map(([c, k]) => `  ${c.padEnd(36)} ${String(k).padStart(9)}`)
  .join('\n')
console.log(
  `wrote ${outPrefix}.{frames,jsonl,dids.json}: ${N} frames (${(frames.total / 1e6).toFixed(1)} MB), ` +
    `${jsonLines} Jetstream events (${(jsonl.total / 1e6).toFixed(1)} MB), ${NDIDS} DIDs, in ${secs.toFixed(1)} s\n${breakdown}`,
)
