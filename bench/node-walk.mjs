#!/usr/bin/env node
// Walk-and-decode throughput of a repository CAR with the TypeScript
// reference implementation, to compare with skyhouse's car_bench example.
//
//   node node-walk.mjs FILE.car [ITER=5] [--no-verify]
//
// Each iteration does what skyhouse does: parse the CAR (readCarWithRoot,
// which checks every block's hash unless --no-verify), load the commit, walk
// the MST in key order (Repo.walkRecords) and decode every record's DAG-CBOR
// to a JS object. One warm-up run, then ITER timed runs; prints one JSON line:
// {"impl","bytes","records","median_s","mb_per_s","records_per_s","peak_rss_mb"}
// with MB = 1e6 bytes.

import { readFileSync } from 'node:fs'
import { MemoryBlockstore, Repo, readCarWithRoot } from '@atproto/repo'

const args = process.argv.slice(2)
const verify = !args.includes('--no-verify')
const [file, iterArg] = args.filter((a) => a !== '--no-verify')
if (!file || file === '-h' || file === '--help') {
  console.error('usage: node node-walk.mjs FILE.car [ITER=5] [--no-verify]')
  process.exit(2)
}
const iters = iterArg === undefined ? 5 : Number(iterArg)
if (!Number.isInteger(iters) || iters < 1) {
  console.error('node-walk: ITER must be a positive integer')
  process.exit(2)
}

const bytes = new Uint8Array(readFileSync(file))

let sink = 0 // keeps the decoded records observably used
async function walk() {
  const { root, blocks } = await readCarWithRoot(bytes, { skipCidVerification: !verify })
  const repo = await Repo.load(new MemoryBlockstore(blocks), root)
  let records = 0
  for await (const { collection, rkey, record } of repo.walkRecords()) {
    if (typeof record.$type !== 'string') {
      throw new Error(`record without $type at ${collection}/${rkey}`)
    }
    sink += Object.keys(record).length
    records++
  }
  return records
}

const records = await walk() // warm-up
const times = []
for (let i = 0; i < iters; i++) {
  const t = process.hrtime.bigint()
  const n = await walk()
  times.push(Number(process.hrtime.bigint() - t) / 1e9)
  if (n !== records) throw new Error(`record count changed: ${n} != ${records}`)
}
if (sink === 0 && records > 0) throw new Error('nothing decoded')
times.sort((a, b) => a - b)
const median =
  times.length % 2 === 1
    ? times[(times.length - 1) / 2]
    : (times[times.length / 2 - 1] + times[times.length / 2]) / 2

const round = (x, d) => Number(x.toFixed(d))
console.log(
  JSON.stringify({
    impl: verify ? 'node @atproto/repo' : 'node @atproto/repo (no hash check)',
    bytes: bytes.byteLength,
    records,
    median_s: round(median, 6),
    mb_per_s: round(bytes.byteLength / 1e6 / median, 1),
    records_per_s: Math.round(records / median),
    peak_rss_mb: round(process.resourceUsage().maxRSS / 1024, 1),
  }),
)
