//! A repository export (`com.atproto.sync.getRepo` CAR): the signed commit,
//! then every record in key order.
//!
//! [`Repo::read`] streams the CAR into a [`BlockStore`] (bounded by
//! [`CarOptions::memory_cap`]), decodes the commit, and [`Repo::walk`] visits
//! each `(collection, rkey, cid, bytes)` in MST key order.

use std::io::Read;
use std::sync::Arc;

use crate::car::{BlockStore, CarError, CarOptions, CarReader};
use crate::cid::Cid;
use crate::commit::{Commit, CommitError};
use crate::mst::{MstError, WalkError, WalkStats, Walker};

/// Why a repository could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The CAR itself is broken.
    #[error(transparent)]
    Car(#[from] CarError),
    /// The CAR header names no root (or several).
    #[error("repository CAR must name exactly one root, found {0}")]
    Roots(usize),
    /// The commit block named by the root is absent.
    #[error("commit block {0} is missing from the CAR")]
    MissingCommit(Cid),
    /// The commit block is not a valid commit.
    #[error("commit {cid}: {source}")]
    Commit {
        /// The commit's CID.
        cid: Cid,
        /// What was wrong.
        source: CommitError,
    },
    /// The tree is broken.
    #[error(transparent)]
    Mst(#[from] MstError),
    /// An MST key is not `collection/rkey`.
    #[error("MST key {key:?} is not a valid collection/rkey path")]
    BadPath {
        /// The key, lossily decoded.
        key: String,
    },
    /// Reading a spilled block failed.
    #[error("reading block: {0}")]
    Io(#[from] std::io::Error),
}

/// One record visited by [`Repo::walk`].
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// The collection NSID (`app.bsky.feed.post`).
    pub collection: &'a str,
    /// The record key.
    pub rkey: &'a str,
    /// The record's CID.
    pub cid: Cid,
    /// The record's DAG-CBOR bytes; `None` if the CAR lacks the block.
    pub data: Option<&'a [u8]>,
}

/// A repository read from a CAR.
#[derive(Debug)]
pub struct Repo {
    /// The signed commit.
    pub commit: Commit<'static>,
    /// The commit's CID (the CAR root).
    pub commit_cid: Cid,
    /// Every block of the CAR.
    pub blocks: BlockStore,
}

/// Split an MST key into a valid `(collection, rkey)`.
pub fn split_path(key: &[u8]) -> Option<(&str, &str)> {
    split_checked(key, |_| false)
}

/// `key` split at its first `/`, each side checked; `known(collection)`
/// says the collection was checked already.
fn split_checked(key: &[u8], known: impl FnOnce(&str) -> bool) -> Option<(&str, &str)> {
    // Valid NSIDs and record keys are ASCII.
    if !key.is_ascii() {
        return None;
    }
    let s = std::str::from_utf8(key).ok()?;
    let (collection, rkey) = s.split_once('/')?;
    if !known(collection) && !crate::syntax::Nsid::is_valid(collection) {
        return None;
    }
    crate::syntax::RecordKey::is_valid(rkey).then_some((collection, rkey))
}

/// [`split_path`] for keys in MST order: a repository's keys are grouped by
/// collection, so the collection's NSID check runs once per group.
#[derive(Debug, Default)]
pub struct PathSplitter {
    last_collection: String,
}

impl PathSplitter {
    /// Split and validate one key.
    pub fn split<'k>(&mut self, key: &'k [u8]) -> Option<(&'k str, &'k str)> {
        let (collection, rkey) = split_checked(key, |c| c == self.last_collection)?;
        if collection != self.last_collection {
            self.last_collection.clear();
            self.last_collection.push_str(collection);
        }
        Some((collection, rkey))
    }
}

impl Repo {
    /// Read a repository CAR from a stream (wrap files in `BufReader`).
    pub fn read<R: Read>(reader: R, opts: CarOptions) -> Result<Repo, RepoError> {
        let mut car = CarReader::new(reader, opts)?;
        let roots = car.roots().to_vec();
        let blocks = BlockStore::from_car(&mut car)?;
        Repo::from_blocks(&roots, blocks)
    }

    /// A repository from a CAR already in memory, indexed in place (no copy).
    pub fn from_shared(car: Arc<[u8]>, opts: CarOptions) -> Result<Repo, RepoError> {
        let (roots, blocks) = BlockStore::from_shared(car, opts)?;
        Repo::from_blocks(&roots, blocks)
    }

    /// [`Repo::from_shared`] for a CAR read into a vector (a download), kept
    /// as it is: no copy.
    pub fn from_vec(car: Vec<u8>, opts: CarOptions) -> Result<Repo, RepoError> {
        let (roots, blocks) = BlockStore::from_vec(car, opts)?;
        Repo::from_blocks(&roots, blocks)
    }

    fn from_blocks(roots: &[Cid], blocks: BlockStore) -> Result<Repo, RepoError> {
        let root = match roots {
            [root] => *root,
            roots => return Err(RepoError::Roots(roots.len())),
        };
        let commit = blocks
            .with_block(&root, |b| {
                b.map(|b| Commit::decode(b).map(Commit::into_owned))
            })?
            .ok_or(RepoError::MissingCommit(root))?
            .map_err(|source| RepoError::Commit { cid: root, source })?;
        Ok(Repo {
            commit,
            commit_cid: root,
            blocks,
        })
    }

    /// Read a repository CAR held in memory (one copy; see [`Repo::from_shared`]).
    pub fn from_bytes(bytes: &[u8], opts: CarOptions) -> Result<Repo, RepoError> {
        Repo::from_shared(Arc::from(bytes), opts)
    }

    /// Visit every record in key order. `f`'s error stops the walk and comes
    /// back as `Err(WalkError::Visitor(e))`.
    pub fn walk<E>(
        &self,
        mut f: impl FnMut(RecordRef<'_>) -> Result<(), E>,
    ) -> Result<WalkStats, WalkError<RepoOrVisitor<E>>> {
        let blocks = &self.blocks;
        let mut walker = Walker::new(blocks);
        let mut paths = PathSplitter::default();
        walker.walk(&self.commit.data, &mut |key: &[u8], cid: Cid| {
            let (collection, rkey) = paths.split(key).ok_or_else(|| {
                RepoOrVisitor::Repo(RepoError::BadPath {
                    key: String::from_utf8_lossy(key).into_owned(),
                })
            })?;
            blocks
                .with_block(&cid, |data| {
                    f(RecordRef {
                        collection,
                        rkey,
                        cid,
                        data,
                    })
                })
                .map_err(|e| RepoOrVisitor::Repo(RepoError::Io(e)))?
                .map_err(RepoOrVisitor::Visitor)
        })
    }
}

/// A failure inside [`Repo::walk`]'s visitor: the repository's or the caller's.
#[derive(Debug, thiserror::Error)]
pub enum RepoOrVisitor<E> {
    /// A record path or block problem.
    #[error(transparent)]
    Repo(RepoError),
    /// The caller's own error.
    #[error("{0}")]
    Visitor(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_path_and_the_splitter_agree_on_good_and_bad_keys() {
        let keys: [&[u8]; 9] = [
            b"app.bsky.feed.like/3jzfcijpj2z2a",
            b"app.bsky.feed.like/self",
            b"app.bsky.feed.like/bad key",
            b"app.bsky.feed.like/",
            b"not an nsid/3jzfcijpj2z2a",
            b"app.bsky.feed.like",
            b"app.bsky.feed.post/3jzfcijpj2z2a",
            b"app.bsky.feed.post/\xc3\xa9",
            b"app.bsky.feed.post/a/b",
        ];
        let want = [
            Some(("app.bsky.feed.like", "3jzfcijpj2z2a")),
            Some(("app.bsky.feed.like", "self")),
            None,
            None,
            None,
            None,
            Some(("app.bsky.feed.post", "3jzfcijpj2z2a")),
            None,
            None,
        ];
        let mut splitter = PathSplitter::default();
        for (key, want) in keys.iter().zip(want) {
            assert_eq!(split_path(key), want, "{key:?}");
            assert_eq!(splitter.split(key), want, "{key:?}");
        }
    }
}
