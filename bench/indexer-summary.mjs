#!/usr/bin/env node
// Medians per case of indexer_bench's JSON lines (stdin), and the goals.
//
//   ... | node indexer-summary.mjs
import { readFileSync } from 'node:fs'

const GOALS = { jetstream: 200_000, firehose: 100_000, 'firehose-verify': 30_000 }
const RSS_GOAL_MB = 200
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const runs = readFileSync(0, 'utf8')
  .split('\n')
  .filter((l) => l.startsWith('{'))
  .map((l) => JSON.parse(l))
const byCase = new Map()
for (const r of runs) byCase.set(r.case, [...(byCase.get(r.case) ?? []), r])
for (const [name, rs] of byCase) {
  const eps = median(rs.map((r) => r.events_per_s))
  const perEvent = (key) => {
    const xs = rs.filter((r) => r[key] != null).map((r) => (r[key] / r.events) * 1e6)
    return xs.length ? median(xs).toFixed(1).padStart(5) : '    -'
  }
  const cpu = `CPU/event: client ${perEvent('cpu_s')} us, ClickHouse ${perEvent('clickhouse_cpu_s')} us`
  if (name.startsWith('decode-')) {
    console.log(`${name.padEnd(16)} ${String(Math.round(eps)).padStart(8)} events/s  one thread, no servers  ${cpu}  (median of ${rs.length})`)
    continue
  }
  const p99 = median(rs.map((r) => r.p99_latency_ms ?? NaN))
  const rss = median(rs.map((r) => r.peak_rss_mb))
  const goal = GOALS[name]
  const ok = eps >= goal && rss <= RSS_GOAL_MB ? 'meets' : 'MISSES'
  console.log(
    `${name.padEnd(16)} ${String(Math.round(eps)).padStart(8)} events/s  p99 ${p99.toFixed(0).padStart(6)} ms  ` +
      `peak RSS ${rss.toFixed(0).padStart(4)} MiB  ${cpu}  (median of ${rs.length}; goal >= ${goal} events/s, <= ${RSS_GOAL_MB} MiB: ${ok})`,
  )
}
