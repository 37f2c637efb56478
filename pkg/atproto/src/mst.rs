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
use crate::cbor;
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

/// One decoded node. Keys are expanded into one buffer; each entry holds its
/// key's range in it, its layer, its value and its right subtree.
struct Node {
    left: Option<Cid>,
    keys: Vec<u8>,
    entries: Vec<NodeEntry>,
}

struct NodeEntry {
    key: std::ops::Range<usize>,
    layer: u32,
    value: Cid,
    right: Option<Cid>,
}

fn invalid(cid: Cid, reason: impl Into<String>) -> MstError {
    MstError::Invalid {
        cid,
        reason: reason.into(),
    }
}

/// Decode a node straight from its bytes, without building a generic value
/// tree: the walk's hottest path. The node must be exactly
/// `{"e": [{"k","p","t","v"}…], "l"}` in canonical order, so it is as strict
/// as the generic decoder.
fn decode_node(cid: Cid, bytes: &[u8]) -> Result<Node, MstError> {
    let cbor_err = |source| MstError::Cbor { cid, source };
    let mut d = cbor::Decoder::new(bytes);
    let expect_key = |d: &mut cbor::Decoder<'_>, want: &'static str| -> Result<(), MstError> {
        let (major, len, _) = d.head().map_err(cbor_err)?;
        if major != 3 || d.take(len).map_err(cbor_err)? != want.as_bytes() {
            return Err(invalid(cid, format!("expected field {want}")));
        }
        Ok(())
    };
    let (major, n, _) = d.head().map_err(cbor_err)?;
    if major != 5 || n != 2 {
        return Err(invalid(cid, "node must be a map of exactly l and e"));
    }
    expect_key(&mut d, "e")?;
    let (major, count, _) = d.head().map_err(cbor_err)?;
    if major != 4 {
        return Err(invalid(cid, "e is not an array"));
    }
    // Each entry takes at least 8 bytes: cap the reservation by the input.
    if count > bytes.len() as u64 / 8 {
        return Err(invalid(cid, format!("e claims {count} entries")));
    }
    let mut keys: Vec<u8> = Vec::with_capacity(count as usize * 24);
    let mut entries = Vec::with_capacity(count as usize);
    let mut prev = 0..0;
    for i in 0..count {
        let (major, n, _) = d.head().map_err(cbor_err)?;
        if major != 5 || n != 4 {
            return Err(invalid(
                cid,
                format!("entry {i} must be a map of exactly k, p, t, v"),
            ));
        }
        expect_key(&mut d, "k")?;
        let (major, klen, _) = d.head().map_err(cbor_err)?;
        if major != 2 {
            return Err(invalid(cid, format!("entry {i}: k is not bytes")));
        }
        let suffix = d.take(klen).map_err(cbor_err)?;
        expect_key(&mut d, "p")?;
        let (major, p, _) = d.head().map_err(cbor_err)?;
        if major != 0 {
            return Err(invalid(
                cid,
                format!("entry {i}: p is not an unsigned integer"),
            ));
        }
        let prev_len = (prev.end - prev.start) as u64;
        if p > prev_len || (i == 0 && p != 0) {
            return Err(invalid(
                cid,
                format!("entry {i}: prefix length {p} out of range"),
            ));
        }
        expect_key(&mut d, "t")?;
        let right = d.link_or_null().map_err(cbor_err)?;
        expect_key(&mut d, "v")?;
        let value = d
            .link_or_null()
            .map_err(cbor_err)?
            .ok_or_else(|| invalid(cid, format!("entry {i}: v is null")))?;
        let start = keys.len();
        keys.extend_from_within(prev.start..prev.start + p as usize);
        keys.extend_from_slice(suffix);
        let key = start..keys.len();
        if key.is_empty() || key.len() > MAX_KEY {
            return Err(invalid(
                cid,
                format!("entry {i}: key length {} out of range", key.len()),
            ));
        }
        let layer = key_height(&keys[key.clone()]);
        prev = key.clone();
        entries.push(NodeEntry {
            key,
            layer,
            value,
            right,
        });
    }
    expect_key(&mut d, "l")?;
    let left = d.link_or_null().map_err(cbor_err)?;
    if !d.at_end() {
        return Err(invalid(cid, "trailing bytes after the node"));
    }
    Ok(Node {
        left,
        keys,
        entries,
    })
}

/// The walk's per-entry callback: `(key, value CID)`.
pub type LeafFn<'f, E> = dyn FnMut(&[u8], Cid) -> Result<(), E> + 'f;

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
        Walker {
            store,
            last_key: Vec::new(),
            stats: WalkStats::default(),
            nodes: None,
        }
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
    /// — use [`entries`] for the common case.
    pub fn walk<E>(
        &mut self,
        root: &Cid,
        leaf: &mut LeafFn<'_, E>,
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
        leaf: &mut LeafFn<'_, E>,
    ) -> Result<(), WalkError<E>> {
        if depth > MAX_HEIGHT {
            return Err(WalkError::Tree(invalid(
                cid,
                format!("tree deeper than {MAX_HEIGHT}"),
            )));
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
            Some(e) => e.layer,
            None => match parent_layer {
                Some(0) => return Err(WalkError::Tree(invalid(cid, "node below layer 0"))),
                Some(p) => p - 1,
                None => u32::MAX,
            },
        };
        if let Some(p) = parent_layer {
            if layer >= p {
                return Err(WalkError::Tree(invalid(
                    cid,
                    format!("layer {layer} not below its parent's {p}"),
                )));
            }
        }
        if let Some(left) = node.left {
            self.visit(left, Some(layer), depth + 1, false, leaf)?;
        }
        for e in &node.entries {
            let key = &node.keys[e.key.clone()];
            if e.layer != layer {
                return Err(WalkError::Tree(invalid(
                    cid,
                    format!(
                        "key {:?} has layer {} in a layer-{layer} node",
                        String::from_utf8_lossy(key),
                        e.layer
                    ),
                )));
            }
            if self.stats.entries > 0 && key <= self.last_key.as_slice() {
                return Err(WalkError::Tree(invalid(
                    cid,
                    format!("key {:?} out of order", String::from_utf8_lossy(key)),
                )));
            }
            self.last_key.clear();
            self.last_key.extend_from_slice(key);
            self.stats.entries += 1;
            leaf(key, e.value).map_err(WalkError::Visitor)?;
            if let Some(right) = e.right {
                self.visit(right, Some(layer), depth + 1, false, leaf)?;
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
