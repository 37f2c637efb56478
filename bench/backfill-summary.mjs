#!/usr/bin/env node
// Medians per case of the backfill bench's JSON lines (stdin), beside the goals
// (pkg/backfill/bench/bench.sh pipes them here).
//
//   ... | node backfill-summary.mjs
import { readFileSync } from 'node:fs'

// CPU us per record: the worker's own (decode: one thread), ClickHouse's; fraction of the bound.
const GOALS = {
  decode: { skyhouse: 1 },
  small: { skyhouse: 2.5, bound: 0.85 },
  big: { skyhouse: 2.5, rss: 1024 },
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
const byCase = new Map()
for (const r of runs) byCase.set(r.case, [...(byCase.get(r.case) ?? []), r])
const extra = process.env.WORK_ARGS ? `, ${process.env.WORK_ARGS}` : ''
console.log(`== medians (concurrency ${process.env.CONCURRENCY ?? '?'}${extra})`)
console.log('case    window   records/s  repos/s  worker us  ClickHouse us  bound/s  of bound  peak RSS   load (1m, others)')
for (const [name, rs] of byCase) {
  const goal = GOALS[name] ?? {}
  const verdicts = []
  for (const win of ['steady', 'whole']) {
    const f = rs.map((r) => r.figures?.[win]).filter(Boolean)
    if (!f.length) continue
    const m = (k) => median(f.map((x) => x[k]))
    const rss = median(rs.map((r) => r.peak_rss_mb))
    const repos = win === 'whole' ? median(rs.map((r) => r.repos_per_s)) : null
    console.log(
      `${name.padEnd(7)} ${win.padEnd(6)} ${fmt(m('per_s'), 0, 10)} ${fmt(repos, 0, 8)} ${fmt(m('skyhouse_us'), 2, 10)} ${fmt(m('clickhouse_us'), 2, 14)} ` +
        `${fmt(m('bound_per_s'), 0, 8)} ${fmt(m('of_bound'), 2, 9)} ${fmt(rss, 0, 5)} MiB   ` +
        `${fmt(median(rs.map((r) => r.load_end?.[0])), 2, 4)}, ${fmt(m('others_cores'), 2, 4)}   (median of ${f.length})`,
    )
    if (win === 'steady' || !rs.some((r) => r.figures?.steady)) {
      if (goal.skyhouse != null) verdicts.push(`worker ${fmt(m('skyhouse_us'), 2, 0)} <= ${goal.skyhouse} us: ${m('skyhouse_us') <= goal.skyhouse ? 'yes' : 'NO'}`)
      if (goal.bound != null && m('of_bound') != null)
        verdicts.push(`of bound ${fmt(m('of_bound'), 2, 0)} >= ${goal.bound}: ${m('of_bound') >= goal.bound ? 'yes' : 'NO'}`)
      if (goal.rss != null) verdicts.push(`RSS ${fmt(rss, 0, 0)} <= ${goal.rss} MiB: ${rss <= goal.rss ? 'yes' : 'NO'}`)
    }
  }
  if (verdicts.length) console.log(`${''.padEnd(7)} goals: ${verdicts.join('; ')}`)
}
