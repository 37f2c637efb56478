//! The backfill work queue: a Redis Stream read through a consumer group.
//!
//! ```text
//! enqueue ─XADD─► <prefix>backfill ─XREADGROUP─► workers ─(ClickHouse ack)─► XACK ─► XTRIM MINID
//!                                  └─XAUTOCLAIM (idle > claim-idle: a crashed worker's entries)
//! ```
//!
//! Entries hold a DID and why it was queued, never records. Any number of
//! workers on any number of machines share one group: Redis hands each entry
//! to one consumer, keeps it pending until that consumer acks it, and lets
//! another consumer take it over once it has been idle too long.
//!
//! Reads never use `BLOCK`: the client multiplexes every command over one
//! connection, and a blocking read would hold up every other worker's
//! commands. Callers poll and sleep when the queue is empty.

use std::collections::HashMap;
use std::time::Duration;

use fred::prelude::*;

use crate::{State, StateError};

/// One queued repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkEntry {
    /// The stream entry's id (`<ms>-<seq>`), what [`WorkQueue::ack`] takes.
    pub id: String,
    /// The DID to (re)fetch.
    pub did: String,
    /// Why it was queued (`listRepos`, `did`, `gap`, `sync`, …).
    pub reason: String,
    /// The source position that revealed it (resync entries), if any.
    pub at: Option<i64>,
}

/// A Redis Stream consumed through one consumer group.
#[derive(Debug, Clone)]
pub struct WorkQueue {
    state: State,
    key: String,
    group: String,
}

impl State {
    /// The work queue in stream `name` (under the prefix), consumed by `group`.
    pub fn work_queue(&self, name: &str, group: &str) -> WorkQueue {
        WorkQueue {
            state: self.clone(),
            key: self.key(name),
            group: group.to_string(),
        }
    }

    /// A string value stored under `name` (e.g. a `listRepos` cursor).
    pub async fn value(&self, name: &str) -> Result<Option<String>, StateError> {
        Ok(self.client.get(self.key(name)).await?)
    }

    /// Store a string value under `name`.
    pub async fn set_value(&self, name: &str, value: &str) -> Result<(), StateError> {
        let _: () = self
            .client
            .set(self.key(name), value, None, None, false)
            .await?;
        Ok(())
    }

    /// Take or keep the lease `name` for `holder` for `ttl`: true when
    /// `holder` holds it now (it was free, or `holder` already held it and
    /// the lease is extended). One process at a time does a job that needs
    /// no second runner (the identities walk); if it dies, the lease
    /// expires and another takes over.
    pub async fn lease(&self, name: &str, holder: &str, ttl: Duration) -> Result<bool, StateError> {
        let key = self.key(name);
        let px = Some(fred::types::Expiration::PX(ms(ttl).max(1) as i64));
        let set: Option<String> = self
            .client
            .set(
                &key,
                holder,
                px.clone(),
                Some(fred::types::SetOptions::NX),
                false,
            )
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        let current: Option<String> = self.client.get(&key).await?;
        if current.as_deref() != Some(holder) {
            return Ok(false);
        }
        let _: bool = self
            .client
            .pexpire(&key, ms(ttl).max(1) as i64, None)
            .await?;
        Ok(true)
    }

    /// Append `did` and `reason` to the dead-letter list `name` (newest
    /// first) as one `did<TAB>reason` line.
    pub async fn dead_letter(&self, name: &str, did: &str, reason: &str) -> Result<(), StateError> {
        let line = format!("{did}\t{}", reason.replace(['\t', '\n'], " "));
        let _: i64 = self.client.lpush(self.key(name), line).await?;
        Ok(())
    }

    /// Entries of the dead-letter list `name`, newest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        name: &str,
        limit: i64,
    ) -> Result<Vec<(String, String)>, StateError> {
        let lines: Vec<String> = self.client.lrange(self.key(name), 0, limit - 1).await?;
        Ok(lines
            .into_iter()
            .map(|l| match l.split_once('\t') {
                Some((d, r)) => (d.to_string(), r.to_string()),
                None => (l, String::new()),
            })
            .collect())
    }

    /// Length of the list `name`.
    pub async fn list_len(&self, name: &str) -> Result<u64, StateError> {
        Ok(self.client.llen(self.key(name)).await?)
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Stream entries `[[id, [field, value, …]], …]`; entries deleted while
/// pending come back as `[id, nil]` and are skipped.
fn entries(v: Value) -> Vec<WorkEntry> {
    stream_entries(v)
        .into_iter()
        .filter_map(|(id, mut map)| {
            let did = map.remove("did")?;
            Some(WorkEntry {
                id,
                did,
                reason: map.remove("reason").unwrap_or_default(),
                at: map.get("at").and_then(|a| a.parse().ok()),
            })
        })
        .collect()
}

/// Stream entries as `(id, fields)`, skipping deleted ones.
pub(crate) fn stream_entries(v: Value) -> Vec<(String, HashMap<String, String>)> {
    let Value::Array(items) = v else {
        return Vec::new();
    };
    items.into_iter().filter_map(entry).collect()
}

fn entry(v: Value) -> Option<(String, HashMap<String, String>)> {
    let Value::Array(mut pair) = v else {
        return None;
    };
    if pair.len() != 2 {
        return None;
    }
    let fields = pair.pop()?;
    let id = pair.pop()?.as_string()?;
    let mut map: HashMap<String, String> = HashMap::new();
    match fields {
        Value::Array(flat) => {
            let mut it = flat.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                if let (Some(k), Some(v)) = (k.as_string(), v.as_string()) {
                    map.insert(k, v);
                }
            }
        }
        Value::Map(m) => {
            for (k, v) in m.inner() {
                if let (Some(k), Some(v)) = (k.as_str().map(|s| s.to_string()), v.as_string()) {
                    map.insert(k, v);
                }
            }
        }
        _ => return None,
    }
    Some((id, map))
}

/// Stream ids compare as `(ms, seq)` pairs, not as strings.
pub fn parse_id(id: &str) -> Option<(u64, u64)> {
    let (a, b) = id.split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl WorkQueue {
    /// The stream's full key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Create the stream and the group (reading from the start) if missing.
    pub async fn create_group(&self) -> Result<(), StateError> {
        let r: Result<(), fred::error::Error> = self
            .state
            .client
            .xgroup_create(&self.key, &self.group, "0", true)
            .await;
        match r {
            Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
            r => Ok(r?),
        }
    }

    /// Queue `did`. Returns the entry id.
    pub async fn push(&self, did: &str, reason: &str, at: i64) -> Result<String, StateError> {
        Ok(self
            .state
            .client
            .xadd(
                &self.key,
                false,
                None::<()>,
                "*",
                vec![("did", did), ("reason", reason), ("at", &at.to_string())],
            )
            .await?)
    }

    /// Queue many DIDs in one round trip (a pipeline).
    pub async fn push_many(&self, dids: &[String], reason: &str) -> Result<(), StateError> {
        if dids.is_empty() {
            return Ok(());
        }
        let pipe = self.state.client.pipeline();
        for did in dids {
            let _: () = pipe
                .xadd(
                    &self.key,
                    false,
                    None::<()>,
                    "*",
                    vec![("did", did.as_str()), ("reason", reason), ("at", "0")],
                )
                .await?;
        }
        let _: Vec<Value> = pipe.all().await?;
        Ok(())
    }

    /// Up to `count` entries never delivered to any consumer of the group,
    /// now pending for `consumer`. Does not block: empty when there are none.
    pub async fn read(&self, consumer: &str, count: u64) -> Result<Vec<WorkEntry>, StateError> {
        let v: Value = self
            .state
            .client
            .xreadgroup(
                &self.group,
                consumer,
                Some(count),
                None,
                false,
                &self.key,
                ">",
            )
            .await?;
        if v.is_null() {
            return Ok(Vec::new());
        }
        // RESP2: [[key, entries]]; RESP3: {key: entries}.
        let per_key: Vec<Value> = match v {
            Value::Array(keys) => keys
                .into_iter()
                .filter_map(|k| match k {
                    Value::Array(mut kv) if kv.len() == 2 => kv.pop(),
                    _ => None,
                })
                .collect(),
            Value::Map(m) => m.inner().into_values().collect(),
            _ => Vec::new(),
        };
        Ok(per_key.into_iter().flat_map(entries).collect())
    }

    /// Take over up to `count` entries pending (delivered, not acked) for
    /// longer than `min_idle`, e.g. from a worker that crashed.
    pub async fn claim_idle(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: u64,
    ) -> Result<Vec<WorkEntry>, StateError> {
        let v: Value = self
            .state
            .client
            .xautoclaim(
                &self.key,
                &self.group,
                consumer,
                ms(min_idle),
                "0-0",
                Some(count),
                false,
            )
            .await?;
        // [next start, entries, deleted ids]
        Ok(match v {
            Value::Array(mut parts) if parts.len() >= 2 => entries(parts.swap_remove(1)),
            _ => Vec::new(),
        })
    }

    /// Reset the idle time of entries `consumer` is still working on, so no
    /// other worker claims them (a heartbeat for long repositories).
    pub async fn touch(&self, consumer: &str, ids: &[String]) -> Result<(), StateError> {
        if ids.is_empty() {
            return Ok(());
        }
        let _: Value = self
            .state
            .client
            .xclaim(
                &self.key,
                &self.group,
                consumer,
                0,
                ids.to_vec(),
                None,
                None,
                None,
                false,
                true,
            )
            .await?;
        Ok(())
    }

    /// Acknowledge entries (done, whatever the outcome). Returns how many
    /// were pending.
    pub async fn ack(&self, ids: &[String]) -> Result<u64, StateError> {
        if ids.is_empty() {
            return Ok(0);
        }
        Ok(self
            .state
            .client
            .xack(&self.key, &self.group, ids.to_vec())
            .await?)
    }

    /// Entries delivered but not acknowledged, and the smallest such id.
    pub async fn pending(&self) -> Result<(u64, Option<String>), StateError> {
        let v: Value = self
            .state
            .client
            .xpending(&self.key, &self.group, ())
            .await?;
        let Value::Array(items) = v else {
            return Ok((0, None));
        };
        let count = items.first().and_then(Value::as_u64).unwrap_or(0);
        let min = items.get(1).and_then(Value::as_string);
        Ok((count, min))
    }

    /// The oldest `count` entries of the stream, whatever their state
    /// (queued, pending or acked-but-not-trimmed), without reading them for
    /// any consumer.
    pub async fn peek(&self, count: u64) -> Result<Vec<WorkEntry>, StateError> {
        let v: Value = self
            .state
            .client
            .xrange(&self.key, "-", "+", Some(count))
            .await?;
        Ok(entries(v))
    }

    /// Entries in the stream (queued, pending and acked-but-not-trimmed).
    pub async fn len(&self) -> Result<u64, StateError> {
        Ok(self.state.client.xlen(&self.key).await?)
    }

    /// Whether the stream holds no entries.
    pub async fn is_empty(&self) -> Result<bool, StateError> {
        Ok(self.len().await? == 0)
    }

    /// Remove entries every consumer is done with, given `acked`, the
    /// highest id just acknowledged: everything up to it and below the
    /// smallest pending id. Entries are delivered in id order, so an entry
    /// below `acked` that is not pending has been acked. (Assumes this group
    /// is the stream's only reader.) Returns entries removed.
    pub async fn trim_acked(&self, acked: &str) -> Result<u64, StateError> {
        let (count, min_pending) = self.pending().await?;
        // The entry just after `acked`: `acked` itself goes too.
        let after = match parse_id(acked) {
            Some((ms, seq)) => format!("{ms}-{}", seq.saturating_add(1)),
            None => acked.to_string(),
        };
        let min = match (count, min_pending) {
            (0, _) | (_, None) => after,
            (_, Some(p)) => match (parse_id(&p), parse_id(acked)) {
                (Some(a), Some(b)) if a < b => p,
                _ => after,
            },
        };
        Ok(self
            .state
            .client
            .xtrim(&self.key, ("MINID", "=", min.as_str()))
            .await?)
    }
}
