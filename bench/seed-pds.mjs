#!/usr/bin/env node
// Fill a reference PDS (e2e/network.mjs) with accounts for the backfill
// benchmark's `pds` case.
//
//   node seed-pds.mjs PDS_URL ACCOUNTS MIN MAX [SEED]
//
// Creates ACCOUNTS accounts (handles bench<i>.test) and gives each MIN..MAX
// records from records.mjs (gen-car.mjs's mix) through
// com.atproto.repo.applyWrites, 200 writes per call. Blob references are
// dropped (the PDS refuses blobs it never received): profile avatar and
// banner, image/video embeds, external thumbnails. Prints one line per
// account on stdout: `did<TAB>records`.

import { recordGenerator } from './records.mjs'

const USAGE = 'usage: node seed-pds.mjs PDS_URL ACCOUNTS MIN MAX [SEED=20260204]'
const [pds, accountsArg, minArg, maxArg, seedArg] = process.argv.slice(2)
const [ACCOUNTS, MIN, MAX] = [accountsArg, minArg, maxArg].map(Number)
const SEED = seedArg === undefined ? 20260204 : Number(seedArg)
if (!pds || ![ACCOUNTS, MIN, MAX, SEED].every(Number.isInteger) || ACCOUNTS < 1 || MIN < 10 || MAX < MIN) {
  console.error(USAGE)
  process.exit(2)
}

async function xrpc(method, body, jwt) {
  const headers = { 'content-type': 'application/json' }
  if (jwt) headers.authorization = `Bearer ${jwt}`
  const res = await fetch(`${pds}/xrpc/${method}`, { method: 'POST', headers, body: JSON.stringify(body) })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method}: ${res.status} ${text.slice(0, 300)}`)
  return JSON.parse(text)
}

// The record without blob references.
function withoutBlobs(record) {
  const r = { ...record }
  delete r.avatar
  delete r.banner
  const e = r.embed
  if (e) {
    if (e.$type === 'app.bsky.embed.record') {
      // kept: no blob
    } else if (e.$type === 'app.bsky.embed.external') {
      r.embed = { ...e, external: { ...e.external } }
      delete r.embed.external.thumb
    } else if (e.$type === 'app.bsky.embed.recordWithMedia') {
      r.embed = e.record
    } else {
      delete r.embed
    }
  }
  return r
}

const gen = recordGenerator(SEED)
const started = performance.now()
let total = 0
for (let i = 0; i < ACCOUNTS; i++) {
  const n = MIN + (gen.u32() % (MAX - MIN + 1))
  const account = await xrpc('com.atproto.server.createAccount', {
    handle: `bench${i}.test`,
    email: `bench${i}@bench.invalid`,
    password: `bench-password-${i}`,
  })
  const { writes } = gen.writesFor(account.did, n)
  for (let j = 0; j < writes.length; j += 200) {
    await xrpc(
      'com.atproto.repo.applyWrites',
      {
        repo: account.did,
        validate: false,
        writes: writes.slice(j, j + 200).map((w) => ({
          $type: 'com.atproto.repo.applyWrites#create',
          collection: w.collection,
          rkey: w.rkey,
          value: withoutBlobs(w.record),
        })),
      },
      account.accessJwt,
    )
  }
  total += n
  console.log(`${account.did}\t${n}`)
}
console.error(
  `seed-pds: ${ACCOUNTS} accounts, ${total} records in ${((performance.now() - started) / 1000).toFixed(1)} s`,
)
