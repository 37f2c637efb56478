#!/usr/bin/env node
// Medians of bench/cluster.sh's JSON lines (stdin): per bench (indexer, backfill, inserts) and
// target (single / cluster; distributed / local), the whole run's throughput, skyhouse's and the
// servers' CPU us per unit (the servers' summed, then one by one: s1r1 s1r2 s2r1 s2r2 zookeeper),
// peak RSS, the load, and the replication lag sampled during the cluster runs; then the ratios
// cluster / single and local / distributed.
//
//   ... | node cluster-summary.mjs
import { readFileSync } from 'node:fs'

const median = (xs) => {
  const s = xs.filter((x) => x != null && !Number.isNaN(x)).sort((a, b) => a - b)
  if (!s.length) return null
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const fmt = (x, d = 1, w = 7) => (x == null ? '-' : x.toFixed(d)).padStart(w)
const runs = readFileSync(0, 'utf8')
  .split('\n')
  .filter((l) => l.startsWith('{'))
  .map((l) => JSON.parse(l))
  .filter((r) => r.figures?.whole)
const groups = new Map()
for (const r of runs) {
  const k = `${r.bench} ${r.target}`
  groups.set(k, [...(groups.get(k) ?? []), r])
}
const unit = { indexer: 'events', inserts: 'events', backfill: 'records' }
console.log(
  'bench     target        units/s  skyhouse us  servers us  by server (s1r1 s1r2 s2r1 s2r2 zk)   peak RSS   load 1m  others  max delay  max queue',
)
const med = new Map()
for (const [k, rs] of groups) {
  const [bench, target] = k.split(' ')
  const m = (f) => median(rs.map(f))
  const perS = m((r) => r.figures.whole.per_s)
  med.set(k, perS)
  const by = rs[0].clickhouse_us_by_server
    ? rs[0].clickhouse_us_by_server.map((_, i) => m((r) => r.clickhouse_us_by_server?.[i]))
    : null
  const byText = by ? by.map((x) => fmt(x, 1, 5)).join(' ') : '-'
  console.log(
    `${bench.padEnd(9)} ${target.padEnd(11)} ${fmt(perS, 0, 9)} ${fmt(m((r) => r.figures.whole.skyhouse_us), 2, 12)} ` +
      `${fmt(m((r) => r.figures.whole.clickhouse_us), 2, 11)}  ${byText.padEnd(34)} ${fmt(m((r) => r.peak_rss_mb), 0, 6)} MiB ` +
      `${fmt(m((r) => r.load_end?.[0]), 2, 8)} ${fmt(m((r) => r.figures.whole.others_cores), 2, 7)} ` +
      `${fmt(m((r) => r.max_absolute_delay_s), 0, 8)} s ${fmt(m((r) => r.max_queue), 0, 9)}   ` +
      `(${unit[bench]}, median of ${rs.length})`,
  )
}
const ratio = (a, b, what) => {
  const x = med.get(a)
  const y = med.get(b)
  if (x != null && y != null && y > 0) console.log(`${what}: ${(x / y).toFixed(2)}x (${x.toFixed(0)} vs ${y.toFixed(0)} /s)`)
}
ratio('indexer cluster', 'indexer single', 'indexer throughput, cluster / one server')
ratio('backfill cluster', 'backfill single', 'backfill throughput, cluster / one server')
ratio('inserts local', 'inserts distributed', 'inserts, <table>_local per shard / Distributed (sync)')
