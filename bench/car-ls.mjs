// List a repository CAR as `collection/rkey<TAB>cid` lines using @atproto/repo
// (an independent implementation), the oracle for skyhouse's own walker.
import { readFileSync } from 'node:fs'
import { readCarWithRoot, MemoryBlockstore, MST } from '@atproto/repo'
import { decode as cborDecode } from '@atproto/lex-cbor'

const bytes = readFileSync(process.argv[2])
const { root, blocks } = await readCarWithRoot(bytes)
const storage = new MemoryBlockstore(blocks)
const commitBytes = blocks.get(root)
const commit = cborDecode(commitBytes)
const mst = MST.load(storage, commit.data)
const out = []
for await (const leaf of mst.walkLeavesFrom('')) out.push(`${leaf.key}\t${leaf.value.toString()}`)
process.stdout.write(out.map((l) => l + '\n').join(''))
