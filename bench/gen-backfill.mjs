#!/usr/bin/env node
// Generate many signed repositories for the backfill benchmark.
//
//   node gen-backfill.mjs OUT_DIR COUNT MIN MAX [SEED]
//
// COUNT repositories of MIN..MAX records each (uniform), every one with its
// own did:plc-shaped DID and secp256k1 key, records from records.mjs (the
// mix and shapes of gen-car.mjs), one signed commit each, exported as a PDS
// serves com.atproto.sync.getRepo. Writes OUT_DIR/<did suffix>.car and
// OUT_DIR/index.tsv (did, did:key, file, records, bytes per line) and
// OUT_DIR/meta.json (totals and the generation time in seconds), through
// OUT_DIR.tmp renamed at the end, so an interrupted run leaves no OUT_DIR.
// Deterministic: the same arguments give byte-identical files.
//
// One 300 MB repository: COUNT=1 MIN=MAX=840000 (give node a larger heap:
// --max-old-space-size=16384; the whole repository is built in memory).

import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Secp256k1Keypair } from '@atproto/crypto'
import { MemoryBlockstore, Repo, concatBytesAsync, getFullRepo } from '@atproto/repo'
import { recordGenerator } from './records.mjs'

const USAGE = 'usage: node gen-backfill.mjs OUT_DIR COUNT MIN MAX [SEED=20260202]'
const [outDir, countArg, minArg, maxArg, seedArg] = process.argv.slice(2)
const [COUNT, MIN, MAX] = [countArg, minArg, maxArg].map(Number)
const SEED = seedArg === undefined ? 20260202 : Number(seedArg)
if (!outDir || ![COUNT, MIN, MAX, SEED].every(Number.isInteger) || COUNT < 1 || MIN < 10 || MAX < MIN) {
  console.error(USAGE + '\n(COUNT >= 1, 10 <= MIN <= MAX)')
  process.exit(2)
}

const tmp = `${outDir}.tmp`
rmSync(tmp, { recursive: true, force: true })
mkdirSync(tmp, { recursive: true })

const gen = recordGenerator(SEED)
const started = performance.now()
const index = []
let records = 0
let bytes = 0
for (let i = 0; i < COUNT; i++) {
  const did = gen.plcDid()
  const n = MIN + (gen.u32() % (MAX - MIN + 1))
  const { writes, rev } = gen.writesFor(did, n)
  const keypair = await Secp256k1Keypair.import(gen.bytes32())
  const storage = new MemoryBlockstore()
  const root = await Repo.formatInitCommit(storage, did, keypair, writes, rev)
  const repo = await Repo.createFromCommit(storage, root)
  const car = await concatBytesAsync(getFullRepo(storage, repo.cid))
  const file = `${did.slice('did:plc:'.length)}.car`
  writeFileSync(join(tmp, file), car)
  index.push([did, keypair.did(), file, n, car.byteLength].join('\t'))
  records += n
  bytes += car.byteLength
  if ((i + 1) % 500 === 0) {
    console.error(`gen-backfill: ${i + 1}/${COUNT} repositories, ${((performance.now() - started) / 1000).toFixed(0)} s`)
  }
}
const secs = (performance.now() - started) / 1000
const summary = JSON.stringify({ repos: COUNT, records, bytes, seconds: Number(secs.toFixed(1)), seed: SEED })
writeFileSync(join(tmp, 'index.tsv'), index.join('\n') + '\n')
writeFileSync(join(tmp, 'meta.json'), summary + '\n')
rmSync(outDir, { recursive: true, force: true })
renameSync(tmp, outDir)
console.log(summary)
