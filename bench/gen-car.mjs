#!/usr/bin/env node
// Generate a realistic Bluesky repository CAR for benchmarks.
//
//   node gen-car.mjs OUT.car [N] [SEED]
//
// N records (default 30000) with a mix close to the network's: ~50% likes,
// 20% posts (varied text, langs, facets, replies, embeds with blob refs),
// 15% follows, 10% reposts, the rest blocks and list items, plus a profile,
// a chat declaration and a few lists. The repo is built with @atproto/repo
// (MemoryBlockstore + one signed commit with all the writes, secp256k1 key)
// and exported with getFullRepo (writeCarStream), as a PDS serves
// com.atproto.sync.getRepo.
//
// Everything comes from a seeded PRNG and fixed clocks, and secp256k1
// signatures are deterministic (RFC 6979), so the same N and SEED give a
// byte-identical file.

import { mkdirSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import { P256Keypair, Secp256k1Keypair } from '@atproto/crypto'
import { MemoryBlockstore, Repo, concatBytesAsync, getFullRepo } from '@atproto/repo'
import { recordGenerator } from './records.mjs'

const USAGE = 'usage: node gen-car.mjs OUT.car [N=30000] [SEED=20260101]'
const [outPath, nArg, seedArg] = process.argv.slice(2)
if (!outPath || outPath === '-h' || outPath === '--help') {
  console.error(USAGE)
  process.exit(2)
}
const N = nArg === undefined ? 30000 : Number(nArg)
const SEED = seedArg === undefined ? 20260101 : Number(seedArg)
if (!Number.isInteger(N) || N < 10 || !Number.isInteger(SEED)) {
  console.error(USAGE + '\n(N must be an integer >= 10)')
  process.exit(2)
}

const gen = recordGenerator(SEED)
const did = gen.plcDid()

const started = performance.now()
const { writes, rev } = gen.writesFor(did, N)
const counts = new Map()
for (const w of writes) counts.set(w.collection, (counts.get(w.collection) ?? 0) + 1)

// One commit holding every record. (Repo.applyWrites in batches gives the
// same MST and so the same CAR, but is ~15x slower: formatCommit builds a
// covering proof for every write.) The rev is the TID just after the newest
// record, so the output does not depend on the wall clock.
// KEY=p256 in the environment signs with P-256 instead of secp256k1.
const keypair = await (process.env.KEY === 'p256' ? P256Keypair : Secp256k1Keypair).import(gen.bytes32())
const storage = new MemoryBlockstore()
const repo = await Repo.createFromCommit(
  storage,
  await Repo.formatInitCommit(storage, did, keypair, writes, rev),
)

const car = await concatBytesAsync(getFullRepo(storage, repo.cid))
mkdirSync(dirname(outPath), { recursive: true })
writeFileSync(outPath, car)
const secs = (performance.now() - started) / 1000

const breakdown = [...counts.entries()]
  .sort((a, b) => b[1] - a[1])
  .map(([c, k]) => `  ${c.padEnd(28)} ${String(k).padStart(7)}  ${((100 * k) / N).toFixed(1)}%`)
  .join('\n')
console.log(
  `wrote ${outPath}: ${car.byteLength} bytes (${(car.byteLength / 1e6).toFixed(2)} MB), ` +
    `${N} records, did ${did}, key ${keypair.did()}, commit ${repo.cid.toString()}, rev ${repo.commit.rev}, ` +
    `in ${secs.toFixed(1)} s\n${breakdown}`,
)
