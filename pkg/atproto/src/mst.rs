//! The Merkle Search Tree of an atproto repository, walked in key order.
//!
//! A node is `{"l": link|null, "e": [{"p": prefix, "k": suffix, "v": value, "t": link|null}]}`.
//! Keys are prefix-compressed against the previous entry of the same node. A
//! key's layer is the number of leading zero bits of its sha2-256, halved
//! (fanout 4). The walk checks the structure as it goes: entry layers match
//! their node, children sit lower than their parent, keys strictly increase
//! across the whole tree (which also makes a subtree reused twice an error,
//! so hostile input cannot blow the walk up), and nesting is capped.

use sha2::{Digest, Sha256};

use crate::car::BlockStore;
use crate::cbor::{self, Value};
use crate::cid::Cid;

/// Deepest MST accepted. A tree of 2^64 keys with fanout 4 is 32 layers high.
pub const MAX_HEIGHT: usize = 64;

/// Longest key accepted (the repository spec's path limit).
pub const MAX_KEY: usize = 1024;

/// The layer of `key`: leading zero bits of sha2-256(key), divided by two.
pub fn key_height(key: &[u8]) -> u32 {
    let digest = Sha256::digest(key);
    let mut zeros = 0;
    for &b in digest.iter() {
        if b == 0 {
            zeros += 8;
        } else {
            zeros += b.leading_zeros();
            break;
        }
    }
    zeros / 2
}

/// Length of the common prefix of two keys, in bytes.
pub fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// Why a tree could not be walked.
#[derive(Debug, thiserror::Error)]
pub enum MstError {
    /// A node's block is not in the CAR.
    #[error("missing MST node block {0}")]
    MissingNode(Cid),
    /// A node's block is not valid DAG-CBOR.
    #[error("MST node {cid}: {source}")]
    Cbor {
        /// The node.
        cid: Cid,
        /// The decoding error.
        source: cbor::CborError,
    },
    /// A node does not have the MST node shape or breaks an MST invariant.
    #[error("MST node {cid}: {reason}")]
    Invalid {
        /// The node.
        cid: Cid,
        /// What was wrong.
        reason: String,
    },
    /// Reading a spilled block failed.
    #[error("reading MST node {cid}: {source}")]
    Io {
        /// The node.
        cid: Cid,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Counts from a walk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkStats {
    /// MST nodes visited.
    pub nodes: usize,
    /// Leaf entries (records) visited.
    pub entries: usize,
}

/// One decoded node, its entries' keys expanded.
struct Node {
    left: Option<Cid>,
    entries: Vec<(Vec<u8>, Cid, Option<Cid>)>,
}

fn invalid(cid: Cid, reason: impl Into<String>) -> MstError {
    MstError::Invalid { cid, reason: reason.into() }
}

fn link_or_null(v: Option<&Value<'_>>, cid: Cid, field: &str) -> Result<Option<Cid>, MstError> {
    match v {
        Some(Value::Link(c)) => Ok(Some(*c)),
        Some(Value::Null) => Ok(None),
        Some(other) => Err(invalid(cid, format!("{field} is {}, not a link or null", other.kind()))),
        None => Err(invalid(cid, format!("missing {field}"))),
    }
}

fn decode_node(cid: Cid, bytes: &[u8]) -> Result<Node, MstError> {
    let v = cbor::decode(bytes).map_err(|source| MstError::Cbor { cid, source })?;
    let map = v.as_map().ok_or_else(|| invalid(cid, "node is not a map"))?;
    if map.len() != 2 {
        return Err(invalid(cid, "node must have exactly the fields l and e"));
    }
    let left = link_or_null(map.get("l"), cid, "l")?;
    let raw = map
        .get("e")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid(cid, "e is missing or not an array"))?;
    let mut entries: Vec<(Vec<u8>, Cid, Option<Cid>)> = Vec::with_capacity(raw.len());
    for (i, e) in raw.iter().enumerate() {
        let m = e.as_map().ok_or_else(|| invalid(cid, format!("entry {i} is not a map")))?;
        if m.len() != 4 {
            return Err(invalid(cid, format!("entry {i} must have exactly the fields p, k, v, t")));
        }
        let p = m
            .get("p")
            .and_then(Value::as_i64)
            .ok_or_else(|| invalid(cid, format!("entry {i}: p is missing or not an integer")))?;
        let k = m
            .get("k")
            .and_then(Value::as_bytes)
            .ok_or_else(|| invalid(cid, format!("entry {i}: k is missing or not bytes")))?;
        let value = m
            .get("v")
            .and_then(Value::as_link)
            .copied()
            .ok_or_else(|| invalid(cid, format!("entry {i}: v is missing or not a link")))?;
        let right = link_or_null(m.get("t"), cid, "t")?;
        let prev: &[u8] = entries.last().map(|e| e.0.as_slice()).unwrap_or(&[]);
        if p < 0 || p as usize > prev.len() || (i == 0 && p != 0) {
            return Err(invalid(cid, format!("entry {i}: prefix length {p} out of range")));
        }
        let mut key = Vec::with_capacity(p as usize + k.len());
        key.extend_from_slice(&prev[..p as usize]);
        key.extend_from_slice(k);
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(invalid(cid, format!("entry {i}: key length {} out of range", key.len())));
        }
        entries.push((key, value, right));
    }
    Ok(Node { left, entries })
}

/// Walks a tree in key order, checking its structure.
#[derive(Debug)]
pub struct Walker<'s> {
    store: &'s BlockStore,
    last_key: Vec<u8>,
    stats: WalkStats,
    nodes: Option<Vec<Cid>>,
}

impl<'s> Walker<'s> {
    /// A walker over the blocks in `store`.
    pub fn new(store: &'s BlockStore) -> Self {
        Walker { store, last_key: Vec::new(), stats: WalkStats::default(), nodes: None }
    }

    /// Also record the CID of every node visited (see [`Walker::nodes`]).
    pub fn collect_nodes(mut self) -> Self {
        self.nodes = Some(Vec::new());
        self
    }

    /// Node CIDs visited, if [`Walker::collect_nodes`] was set.
    pub fn nodes(&self) -> &[Cid] {
        self.nodes.as_deref().unwrap_or(&[])
    }

    /// Walk the tree under `root`, calling `leaf(key, value_cid)` for every
    /// entry in strictly increasing key order. An error from `leaf` stops the
    /// walk and is returned as `Err(Err(e))`; a tree error as `Err(Ok(e))`
    /// — use [`walk`] for the common case.
    pub fn walk<E>(
        &mut self,
        root: &Cid,
        leaf: &mut dyn FnMut(&[u8], Cid) -> Result<(), E>,
    ) -> Result<WalkStats, WalkError<E>> {
        self.visit(*root, None, 0, true, leaf)?;
        Ok(self.stats)
    }

    fn visit<E>(
        &mut self,
        cid: Cid,
        parent_layer: Option<u32>,
        depth: usize,
        is_root: bool,
        leaf: &mut dyn FnMut(&[u8], Cid) -> Result<(), E>,
    ) -> Result<(), WalkError<E>> {
        if depth > MAX_HEIGHT {
            return Err(WalkError::Tree(invalid(cid, format!("tree deeper than {MAX_HEIGHT}"))));
        }
        let node = self
            .store
            .with_block(&cid, |b| b.map(|b| decode_node(cid, b)))
            .map_err(|source| WalkError::Tree(MstError::Io { cid, source }))?
            .ok_or(WalkError::Tree(MstError::MissingNode(cid)))?
            .map_err(WalkError::Tree)?;
        self.stats.nodes += 1;
        if let Some(n) = &mut self.nodes {
            n.push(cid);
        }
        if node.entries.is_empty() && node.left.is_none() && !is_root {
            return Err(WalkError::Tree(invalid(cid, "empty node below the root")));
        }
        // The node's layer: that of its entries, or one below its parent if it has none.
        let layer = match node.entries.first() {
            Some((k, _, _)) => key_height(k),
            None => match parent_layer {
                Some(0) => return Err(WalkError::Tree(invalid(cid, "node below layer 0"))),
                Some(p) => p - 1,
                None => u32::MAX,
            },
        };
        if let Some(p) = parent_layer {
            if layer >= p {
                return Err(WalkError::Tree(invalid(cid, format!("layer {layer} not below its parent's {p}"))));
            }
        }
        if let Some(left) = node.left {
            self.visit(left, Some(layer), depth + 1, false, leaf)?;
        }
        for (key, value, right) in &node.entries {
            if key_height(key) != layer {
                return Err(WalkError::Tree(invalid(
                    cid,
                    format!("key {:?} has layer {} in a layer-{layer} node", String::from_utf8_lossy(key), key_height(key)),
                )));
            }
            if self.stats.entries > 0 && key.as_slice() <= self.last_key.as_slice() {
                return Err(WalkError::Tree(invalid(
                    cid,
                    format!("key {:?} out of order", String::from_utf8_lossy(key)),
                )));
            }
            self.last_key.clear();
            self.last_key.extend_from_slice(key);
            self.stats.entries += 1;
            leaf(key, *value).map_err(WalkError::Visitor)?;
            if let Some(right) = right {
                self.visit(*right, Some(layer), depth + 1, false, leaf)?;
            }
        }
        Ok(())
    }
}

/// An error from [`Walker::walk`]: the tree's, or the visitor's own.
#[derive(Debug, thiserror::Error)]
pub enum WalkError<E> {
    /// The tree is missing a block or breaks an MST rule.
    #[error(transparent)]
    Tree(MstError),
    /// The visitor returned an error.
    #[error("{0}")]
    Visitor(E),
}

/// Collect every `(key, value CID)` under `root` in key order.
pub fn entries(store: &BlockStore, root: &Cid) -> Result<Vec<(Vec<u8>, Cid)>, MstError> {
    let mut out = Vec::new();
    let mut w = Walker::new(store);
    w.walk::<std::convert::Infallible>(root, &mut |k, v| {
        out.push((k.to_vec(), v));
        Ok(())
    })
    .map_err(|e| match e {
        WalkError::Tree(t) => t,
        WalkError::Visitor(never) => match never {},
    })?;
    Ok(out)
}
