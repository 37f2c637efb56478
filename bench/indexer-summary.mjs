#!/usr/bin/env node
// Medians per case of indexer_bench's JSON lines (stdin), beside the goals.
//
//   ... | node indexer-summary.mjs
//
// For each case: the steady state (10% -> 90% of the events) and the whole
// run: events/s, skyhouse's and ClickHouse's CPU us per event, the bound
// cores / (sum) and the fraction of it reached, peak RSS, p99 ack latency,
// and the load (1-minute average at the end of the run, and the cores other
// processes used during it).
import { readFileSync } from 'node:fs'

// CPU us per event (skyhouse's own; ClickHouse's), RSS MiB, fraction of the bound.
const GOALS = {
  'decode-jetstream': { skyhouse: 1.5 },
  'decode-firehose': { skyhouse: 2 },
  jetstream: { skyhouse: 3.5, clickhouse: 5, rss: 200, bound: 0.85 },
  firehose: { skyhouse: 5, clickhouse: 5, rss: 200, bound: 0.85 },
  'firehose-verify': { clickhouse: 5, rss: 200 },
}
const median = (xs) => {
  const s = xs.filter((x) => x != null && !Number.isNaN(x)).sort((a, b) => a - b)
  if (!s.length) return null
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2
}
const fmt = (x, d = 1, w = 6) => (x == null ? '-' : x.toFixed(d)).padStart(w)
const runs = readFileSync(0, 'utf8')
  .split('\n')
  .filter((l) => l.startsWith('{'))
  .map((l) => JSON.parse(l))
  .filter((r) => r.figures)
const byCase = new Map()
// A run with --raw-records other than all is its own case (`jetstream:none`).
const key = (r) => (r.raw_records && r.raw_records !== 'all' ? `${r.case}:${r.raw_records}` : r.case)
for (const r of runs) byCase.set(key(r), [...(byCase.get(key(r)) ?? []), r])
console.log(
  'case              window   events/s  skyhouse us  ClickHouse us   bound/s  of bound  peak RSS  p99 ack   load (1m, others)',
)
for (const [name, rs] of byCase) {
  const goal = GOALS[name.split(':')[0]] ?? {}
  const verdicts = []
  for (const win of ['steady', 'whole']) {
    const f = rs.map((r) => r.figures[win]).filter(Boolean)
    if (!f.length) continue
    const m = (k) => median(f.map((x) => x[k]))
    const rss = median(rs.map((r) => r.peak_rss_mb))
    const p99 = median(rs.map((r) => r.p99_latency_ms))
    const load = median(rs.map((r) => r.load_end?.[0]))
    console.log(
      `${name.padEnd(17)} ${win.padEnd(6)} ${fmt(m('per_s'), 0, 10)} ${fmt(m('skyhouse_us'), 2, 12)} ${fmt(m('clickhouse_us'), 2, 14)} ` +
        `${fmt(m('bound_per_s'), 0, 9)} ${fmt(m('of_bound'), 2, 9)} ${fmt(rss, 0, 6)} MiB ${fmt(p99, 0, 5)} ms   ` +
        `${fmt(load, 2, 4)}, ${fmt(m('others_cores'), 2, 4)}   (median of ${f.length})`,
    )
    if (win === 'steady') {
      if (goal.skyhouse != null) verdicts.push(`skyhouse ${fmt(m('skyhouse_us'), 2, 0)} <= ${goal.skyhouse}: ${m('skyhouse_us') <= goal.skyhouse ? 'yes' : 'NO'}`)
      if (goal.clickhouse != null && m('clickhouse_us') != null)
        verdicts.push(`ClickHouse ${fmt(m('clickhouse_us'), 2, 0)} <= ${goal.clickhouse}: ${m('clickhouse_us') <= goal.clickhouse ? 'yes' : 'NO'}`)
      if (goal.bound != null && m('of_bound') != null)
        verdicts.push(`of bound ${fmt(m('of_bound'), 2, 0)} >= ${goal.bound}: ${m('of_bound') >= goal.bound ? 'yes' : 'NO'}`)
      if (goal.rss != null) verdicts.push(`RSS ${fmt(rss, 0, 0)} <= ${goal.rss} MiB: ${rss <= goal.rss ? 'yes' : 'NO'}`)
    }
  }
  if (verdicts.length) console.log(`${''.padEnd(17)} goals (steady): ${verdicts.join('; ')}`)
  // Decode cases: how much of skyhouse's figure is the bench's copy of each
  // message into the receive buffer (a source's read), measured alone.
  const copy = median(rs.map((r) => r.receive_copy_us))
  const steady = median(rs.map((r) => r.figures.steady?.skyhouse_us))
  if (copy != null && steady != null)
    console.log(
      `${''.padEnd(17)} of it, the receive copy alone: ${fmt(copy, 2, 0)} us; the rest (decode, transform, encode): ${fmt(steady - copy, 2, 0)} us`,
    )
}
