-- Post and actor search (src/search.rs): current state (FINAL, deleted = 0),
-- hidden accounts (accounts.active = 0) never shown. A post search is the
-- frame `search_posts` with its optional filters, each a fragment below
-- starting with AND, composed into {filters} in the order listed. Text values
-- are quoted literals, times Unix seconds, {limit} a number.

-- name: search_posts
-- Newest first; the keyset (sort_at, did, rkey) is what a cursor continues
-- after. {limit} is one more than the page, to tell whether one follows.
SELECT did, rkey, cid, text, langs, tags, toUInt32(created_at) AS created_at, toUInt32(sort_at) AS sort_at
FROM {db}.posts FINAL
WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) {filters}
ORDER BY sort_at DESC, did DESC, rkey DESC
LIMIT {limit};

-- name: search_posts_terms
-- Every term must occur. {matches}: search_posts_term fragments joined with
-- AND. Candidates come first from the text column alone (PREWHERE, no
-- FINAL), so FINAL reads only their granules instead of the whole table;
-- the terms are checked again on the current row, so an edit or a delete
-- still wins.
AND (did, rkey) IN (SELECT did, rkey FROM {db}.posts{local} PREWHERE {matches}) AND {matches}

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
