-- Post and actor search (src/search.rs): current state (FINAL, deleted = 0),
-- hidden accounts (accounts.active = 0) never shown. A post search is the
-- frame `search_posts` with its optional filters, each a fragment below
-- starting with AND, composed into {filters} in the order listed. Text values
-- are quoted literals, times Unix seconds, {limit} a number.
--
-- A search runs in two steps so that FINAL reads only the rows it returns:
-- `search_posts_recent_candidates` (over windows of an hour, a day and a
-- week) or else `search_posts_candidates` (every post) takes the newest
-- rows of any version (no FINAL) that pass the filters, then the frame
-- reads the current rows of those
-- keys only (`search_posts_keys`, a PREWHERE on the sorting key, so the
-- versions of other keys never reach the merge) from the last candidate's
-- position on (`search_posts_from`). Every current row at or after that
-- position is a candidate itself, so the page is exact; when it comes up
-- short (the candidates were older versions), the search takes more
-- candidates, and at last the frame without keys (`search_posts_terms`).

-- name: search_posts
-- Newest first; the keyset (sort_at, did, rkey) is what a cursor continues
-- after. {limit} is one more than the page, to tell whether one follows.
-- {prewhere}: empty, `search_posts_keys` or `search_posts_terms`.
SELECT did, rkey, cid, text, langs, tags, toUInt32(created_at) AS created_at, toUInt32(sort_at) AS sort_at
FROM {db}.posts FINAL {prewhere}
WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) {filters}
ORDER BY sort_at DESC, did DESC, rkey DESC
LIMIT {limit};

-- name: search_posts_candidates
-- The first step: the newest {limit} rows of any version that pass the
-- same filters. A current row that matches is one of these rows, so every
-- current match at or after the last one's position is among them.
-- {prewhere}: empty or `search_posts_filtered`.
SELECT did, rkey, toUInt32(sort_at) AS sort_at
FROM {db}.posts {prewhere}
WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1)
ORDER BY sort_at DESC, did DESC, rkey DESC
LIMIT {limit};

-- name: search_posts_recent_candidates
-- The first step over a recent window: the same candidates from the posts
-- whose TID time is at or after {from} (`recent_posts`, by TID hour) and
-- from `posts_off_time` (migration 0017: posts whose TID time is more than
-- 10 minutes from their sort_at, or no TID). A post with a sort_at at least
-- 10 minutes after {from} is in one of the two, so the candidates are exact
-- from such a position on, and the step reads the window, not the table
-- (posts of either table with a sort_at before {from} cannot be there).
-- Each branch filters on the shards (hence {local} in the filters).
SELECT did, rkey, toUInt32(sort_at) AS sort_at
FROM (SELECT did, rkey, sort_at FROM {db}.recent_posts PREWHERE tid_time >= toDateTime({from}) WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) {filters}
      UNION ALL
      SELECT did, rkey, sort_at FROM {db}.posts_off_time WHERE sort_at >= toDateTime({from}) AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) {filters})
ORDER BY sort_at DESC, did DESC, rkey DESC
LIMIT {limit};

-- name: search_posts_filtered
-- The candidates' filters, read before the rest of each granule (no FINAL
-- there, so any column may be in PREWHERE): a rare term or tag reads the
-- other columns of a few granules only.
PREWHERE 1 {filters}

-- name: search_posts_keys
-- The candidates' keys, {keys} a list of (did, rkey) tuples. On the
-- sorting key, so it may filter before FINAL: all versions of a key pass.
PREWHERE (did, rkey) IN ({keys})

-- name: search_posts_from
-- At or after the last candidate's position in the frame's order.
AND (sort_at > toDateTime({sort_at}) OR (sort_at = toDateTime({sort_at}) AND (did > {did} OR (did = {did} AND rkey >= {rkey}))))

-- name: search_posts_terms
-- Without candidates: keys whose text holds the terms in any version
-- (the text column alone, no FINAL), so FINAL reads only their rows.
PREWHERE (did, rkey) IN (SELECT did, rkey FROM {db}.posts{local} PREWHERE {matches})

-- name: search_posts_matches
-- Every term must occur, checked on the row ({matches}: search_posts_term
-- fragments joined with AND), so an edit or a delete still wins.
AND {matches}

-- name: search_posts_term
positionCaseInsensitiveUTF8(text, {term}) > 0

-- name: search_posts_author_did
AND did = {did}

-- name: search_posts_author_handle
-- {handle} lowercased (handles are stored lowercase).
AND did IN (SELECT did FROM {db}.identities{local} FINAL WHERE handle = {handle})

-- name: search_posts_lang
AND has(langs, {lang})

-- name: search_posts_tag
AND has(arrayMap(x -> lowerUTF8(x), tags), lowerUTF8({tag}))

-- name: search_posts_since
AND sort_at >= toDateTime({since})

-- name: search_posts_until
AND sort_at < toDateTime({until})

-- name: search_posts_after
-- After a cursor's post in the frame's order.
AND (sort_at < toDateTime({sort_at}) OR (sort_at = toDateTime({sort_at}) AND (did < {did} OR (did = {did} AND rkey < {rkey}))))

-- name: search_actors
-- Handle or display name contains {q} (case-insensitive). Current
-- ClickHouse wants an alias on each joined subquery (ALIAS_REQUIRED).
SELECT did, handle, display_name
FROM (SELECT did, handle FROM {db}.identities FINAL WHERE did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1)) AS ids
ANY LEFT JOIN (SELECT did, display_name FROM {db}.profiles FINAL WHERE deleted = 0 AND rkey = 'self') AS names
USING did
WHERE positionCaseInsensitiveUTF8(handle, {q}) > 0 OR positionCaseInsensitiveUTF8(display_name, {q}) > 0
ORDER BY handle, did
LIMIT {limit};
