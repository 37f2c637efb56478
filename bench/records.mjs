// The record generator shared by gen-car.mjs (one large repository) and
// gen-backfill.mjs (many repositories): a seeded PRNG, the network's record
// mix and realistic records (see README.md, "The generated repository").
//
//   const gen = recordGenerator(seed)
//   const did = gen.plcDid()
//   const { writes, rev } = gen.writesFor(did, n)   // n records, one commit's writes
//   const keypair = await Secp256k1Keypair.import(gen.bytes32())
//
// Everything comes from the one PRNG in call order, so the same seed and the
// same sequence of calls give the same records.

import { TID } from '@atproto/common-web'
import { createCid } from '@atproto/lex-data'
import { WriteOpAction } from '@atproto/repo'

// ---------------------------------------------------------------- PRNG
// sfc32 seeded through splitmix32: small, fast and good enough here.
export function makeRng(seed) {
  let s = seed >>> 0
  const split = () => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0
    return (z ^ (z >>> 16)) >>> 0
  }
  let a = split()
  let b = split()
  let c = split()
  let d = split()
  const u32 = () => {
    const t = (((a + b) >>> 0) + d) >>> 0
    d = (d + 1) >>> 0
    a = b ^ (b >>> 9)
    b = (c + (c << 3)) >>> 0
    c = ((c << 21) | (c >>> 11)) >>> 0
    c = (c + t) >>> 0
    return t
  }
  for (let i = 0; i < 16; i++) u32()
  return u32
}

const create = (collection, rkey, record) => ({ action: WriteOpAction.Create, collection, rkey, record })

// The generator: `seed` fixes everything, including the pool of other
// accounts that likes, replies and follows point at.
export function recordGenerator(seed) {
  const u32 = makeRng(seed)
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
    let r = rand() * table.reduce((s, [, w]) => s + w, 0)
    for (const [v, w] of table) {
      r -= w
      if (r < 0) return v
    }
    return table[table.length - 1][0]
  }

  // ---------------------------------------------------------------- identities
  const B32 = 'abcdefghijklmnopqrstuvwxyz234567'
  const plcDid = () => {
    let s = 'did:plc:'
    for (let i = 0; i < 24; i++) s += B32[u32() & 31]
    return s
  }
  const WEB_HOSTS = ['example.com', 'example.org', 'example.net', 'blog.example.com']
  const otherDid = () => (chance(0.01) ? `did:web:${pick(WEB_HOSTS)}` : plcDid())
  // Other accounts we interact with: a pool, so likes/replies cluster on a
  // few thousand authors as in a real social graph.
  const POOL = Array.from({ length: 4000 }, otherDid)
  const poolDid = () => POOL[Math.min(POOL.length - 1, Math.floor(POOL.length * rand() ** 2))]

  const DAG_CBOR = 0x71
  const RAW = 0x55
  const SHA256 = 0x12
  const cborCidStr = () => createCid(DAG_CBOR, SHA256, bytes32()).toString()
  const blob = (mimeType, size) => ({
    $type: 'blob',
    ref: createCid(RAW, SHA256, bytes32()),
    mimeType,
    size,
  })

  // ---------------------------------------------------------------- time
  // Records span ~2.5 years; rkeys are TIDs of their creation time.
  const T0_MS = Date.UTC(2023, 4, 1)
  const T1_MS = Date.UTC(2025, 10, 1)
  const CLOCK_ID = 7
  let nowUs = T0_MS * 1000
  let meanStepUs = 0 // set per repository by writesFor
  function tick() {
    // exponential inter-arrival times: bursts and quiet spells
    nowUs += 1 + Math.floor(-Math.log(1 - rand()) * meanStepUs)
    return nowUs
  }
  const tidAt = (us) => TID.fromTime(us, CLOCK_ID).toString()
  const isoAt = (us) => new Date(Math.floor(us / 1000)).toISOString()
  // a TID for someone else's record, created some time before `us`
  const pastTid = (us) => TID.fromTime(us - int(1, 90 * 86400) * 1e6 - int(0, 999999), int(0, 31)).toString()
  const strongRef = (us, collection = 'app.bsky.feed.post') => ({
    uri: `at://${poolDid()}/${collection}/${pastTid(us)}`,
    cid: cborCidStr(),
  })

  // ---------------------------------------------------------------- text
  const WORDS = {
    en: 'the a and to of in is it you that for on this with just so but be my are not have me like was what at all do your can if about out its one from they get more good time people think today know really new see would now day first back been some how much love going still make great need very want thanks why only over here year work night feel look way thing right well even best also made post read week world home game little never lol yeah sure maybe actually weird cool'.split(' '),
    ja: 'こんにちは 今日 ありがとう 本当に すごい かわいい 明日 写真 猫 ラーメン 東京 天気 仕事 楽しい 眠い 映画 ゲーム 日本 です ます。 ね！ 笑'.split(' '),
    pt: 'olá obrigado hoje não você muito bom dia então também café saudade coração amanhã está são ação pão avó'.split(' '),
    de: 'und nicht heute schön Grüße über Straße Mädchen früh müde Käse wirklich vielleicht genau danke'.split(' '),
    es: 'hola gracias mañana también niño corazón qué bueno día así año está canción señor fútbol'.split(' '),
  }
  const LANG_TABLE = [['en', 68], ['ja', 12], ['pt', 9], ['de', 5], ['es', 5], [null, 1]]
  const EMOJI = ['😂', '❤️', '🔥', '🙏', '✨', '🦋', '👀', '🎉', '😭', '🥲']
  const TAGS = ['art', 'photography', 'rustlang', 'bluesky', 'cats', 'music', 'science', 'books', 'gamedev', 'news']
  const HANDLE_WORDS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy', 'mallory', 'oscar']
  const utf8Len = (s) => Buffer.byteLength(s, 'utf8')

  // Build a post text of about `target` UTF-16 units (20..300), optionally
  // with facets whose byte ranges point at mentions, links and hashtags.
  function postText(lang, target, withFacets) {
    const words = WORDS[lang ?? 'en']
    let text = ''
    let bytes = 0
    const facets = []
    const push = (tok, feature) => {
      const sep = text.length === 0 ? '' : ' '
      text += sep + tok
      const start = bytes + utf8Len(sep)
      bytes = start + utf8Len(tok)
      if (feature) facets.push({ index: { byteStart: start, byteEnd: bytes }, features: [feature] })
    }
    let wantFacets = withFacets ? int(1, 3) : 0
    while (true) {
      let tok
      let feature
      if (wantFacets > 0 && chance(0.15)) {
        wantFacets--
        const kind = weighted([['mention', 5], ['link', 3], ['tag', 2]])
        if (kind === 'mention') {
          tok = `@${pick(HANDLE_WORDS)}${int(1, 999)}.bsky.social`
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
      if (text.length + 1 + tok.length > target && text.length >= 20) break
      if (text.length + 1 + tok.length > 300) break
      push(tok, feature)
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

  function embed(us) {
    const kind = weighted([['images', 12], ['external', 5], ['record', 4], ['video', 2], ['recordWithMedia', 1]])
    switch (kind) {
      case 'images':
        return images(weighted([[1, 70], [2, 15], [3, 7], [4, 8]]))
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
        return {
          $type: 'app.bsky.embed.video',
          video: blob('video/mp4', int(500_000, 50_000_000)),
          aspectRatio: { width: 1920, height: 1080 },
        }
      default:
        return {
          $type: 'app.bsky.embed.recordWithMedia',
          record: { $type: 'app.bsky.embed.record', record: strongRef(us) },
          media: images(int(1, 2)),
        }
    }
  }

  // ---------------------------------------------------------------- records
  let did = '' // the repository being generated (writesFor)
  let lists = [] // at-uris of its own lists

  function makePost(us) {
    const lang = weighted(LANG_TABLE)
    const target = 20 + Math.floor(280 * rand() ** 2) // most posts are short
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

  function makeRecord(kind, us) {
    const createdAt = isoAt(us)
    switch (kind) {
      case 'app.bsky.feed.like':
        return {
          $type: kind,
          subject: chance(0.01) ? strongRef(us, 'app.bsky.feed.generator') : strongRef(us),
          createdAt,
        }
      case 'app.bsky.feed.post':
        return makePost(us)
      case 'app.bsky.graph.follow':
        return { $type: kind, subject: otherDid(), createdAt }
      case 'app.bsky.feed.repost':
        return { $type: kind, subject: strongRef(us), createdAt }
      case 'app.bsky.graph.block':
        return { $type: kind, subject: otherDid(), createdAt }
      case 'app.bsky.graph.listitem':
        return { $type: kind, subject: poolDid(), list: pick(lists), createdAt }
      default:
        throw new Error(`unknown kind ${kind}`)
    }
  }

  const MIX = [
    ['app.bsky.feed.like', 500],
    ['app.bsky.feed.post', 200],
    ['app.bsky.graph.follow', 150],
    ['app.bsky.feed.repost', 100],
    ['app.bsky.graph.block', 25],
    ['app.bsky.graph.listitem', 25],
  ]

  // The writes of one repository `repoDid` with `N` records (a profile, a
  // chat declaration, 1-5 lists, then the mix), its records' createdAt
  // spread over May 2023 - Nov 2025, and the commit rev: the TID just after
  // the newest record, so nothing depends on the wall clock.
  function writesFor(repoDid, N) {
    did = repoDid
    lists = []
    nowUs = T0_MS * 1000
    meanStepUs = ((T1_MS - T0_MS) * 1000) / N
    // Fixed records first.
    const writes = []
    {
      const us = tick()
      writes.push(
        create('app.bsky.actor.profile', 'self', {
          $type: 'app.bsky.actor.profile',
          displayName: 'Bench Mark 🦋',
          description: postText('en', 160, false).text,
          avatar: blob('image/jpeg', 184_213),
          banner: blob('image/jpeg', 512_880),
          createdAt: isoAt(us),
        }),
        create('chat.bsky.actor.declaration', 'self', {
          $type: 'chat.bsky.actor.declaration',
          allowIncoming: 'following',
        }),
      )
      const nLists = Math.max(1, Math.min(5, Math.round(N / 10000)))
      for (let i = 0; i < nLists; i++) {
        const lus = tick()
        const rkey = tidAt(lus)
        lists.push(`at://${did}/app.bsky.graph.list/${rkey}`)
        writes.push(
          create('app.bsky.graph.list', rkey, {
            $type: 'app.bsky.graph.list',
            purpose: i === 0 ? 'app.bsky.graph.defs#modlist' : 'app.bsky.graph.defs#curatelist',
            name: `list ${i + 1}: ${pick(WORDS.en)} ${pick(WORDS.en)}`,
            description: postText('en', int(20, 200), false).text,
            createdAt: isoAt(lus),
          }),
        )
      }
    }
    for (let i = writes.length; i < N; i++) {
      const collection = weighted(MIX)
      const us = tick()
      writes.push(create(collection, tidAt(us), makeRecord(collection, us)))
    }
    return { writes, rev: tidAt(nowUs + 1) }
  }

  return { u32, bytes32, plcDid, writesFor }
}
