//! The PDS's own view of an account: what an indexer must end up with.

use std::collections::BTreeMap;
use std::sync::Arc;

use skyhouse_atproto::car::CarOptions;
use skyhouse_atproto::repo::Repo;

use crate::xrpc::{Pds, XrpcError};

/// `(collection, rkey)` → record CID (as a string, `bafy…`).
pub type Records = BTreeMap<(String, String), String>;

/// An account's hosting status as the PDS reports it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccountStatus {
    /// Active: its records are visible.
    Active,
    /// Deactivated by its owner: records kept, hidden.
    Deactivated,
    /// Taken down by the PDS admin: records kept, hidden.
    Takendown,
    /// Suspended (a temporary takedown).
    Suspended,
    /// Deleted: the PDS no longer knows the DID; nothing of it may remain.
    Deleted,
    /// Another status string the PDS reported.
    Other(String),
}

impl AccountStatus {
    /// From `getRepoStatus`' `active` and `status`.
    pub fn from_repo_status(active: bool, status: Option<&str>) -> AccountStatus {
        match (active, status) {
            (true, _) => AccountStatus::Active,
            (false, Some("deactivated")) => AccountStatus::Deactivated,
            (false, Some("takendown")) => AccountStatus::Takendown,
            (false, Some("suspended")) => AccountStatus::Suspended,
            (false, Some("deleted")) => AccountStatus::Deleted,
            (false, other) => AccountStatus::Other(other.unwrap_or_default().to_string()),
        }
    }

    /// The status string of firehose `#account` events (`None` when active).
    pub fn as_event_status(&self) -> Option<&str> {
        match self {
            AccountStatus::Active => None,
            AccountStatus::Deactivated => Some("deactivated"),
            AccountStatus::Takendown => Some("takendown"),
            AccountStatus::Suspended => Some("suspended"),
            AccountStatus::Deleted => Some("deleted"),
            AccountStatus::Other(s) => Some(s),
        }
    }
}

/// What the PDS holds for one DID right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truth {
    /// The DID.
    pub did: String,
    /// The current handle (`None` for a deleted account).
    pub handle: Option<String>,
    /// Hosting status (`getRepoStatus`; a DID the PDS does not know is `Deleted`).
    pub status: AccountStatus,
    /// The repository's revision (`None` for a deleted account).
    pub rev: Option<String>,
    /// Every record of the repository (`getRepo` walked with skyhouse-atproto).
    pub records: Records,
}

/// Why the truth could not be established.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TruthError {
    /// A call failed.
    #[error(transparent)]
    Xrpc(#[from] XrpcError),
    /// The repository CAR did not read or walk.
    #[error("{did}: getRepo CAR: {detail}")]
    Repo {
        /// The DID.
        did: String,
        /// What was wrong.
        detail: String,
    },
    /// `getRepo` and `listRecords` disagree: the PDS is inconsistent, or our
    /// CAR walk is wrong.
    #[error("{did}: getRepo and listRecords disagree on {collection}: {detail}")]
    Mismatch {
        /// The DID.
        did: String,
        /// The collection.
        collection: String,
        /// The differing entries.
        detail: String,
    },
}

impl Pds {
    /// The PDS's view of `did`: handle, status, revision and every record.
    ///
    /// Records come from `com.atproto.sync.getRepo` (as admin, so deactivated
    /// and taken-down repositories count too) walked with skyhouse-atproto
    /// (hashes checked); for an active account each collection of
    /// `describeRepo` is cross-checked with `com.atproto.repo.listRecords`,
    /// a different code path of the PDS. A DID the PDS does not know
    /// (`RepoNotFound`) is a deleted account with no records.
    pub async fn truth(&self, did: &str) -> Result<Truth, TruthError> {
        let status = match self.repo_status(did).await {
            Ok(status) => status,
            Err(e) if e.error_name() == Some("RepoNotFound") => {
                return Ok(Truth {
                    did: did.to_string(),
                    handle: None,
                    status: AccountStatus::Deleted,
                    rev: None,
                    records: Records::new(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let handle = self.handle_of(did).await?;
        let car = self.get_repo(did).await?;
        let (rev, records) = walk_car(did, car)?;
        let status = AccountStatus::from_repo_status(status.active, status.status.as_deref());
        if status == AccountStatus::Active {
            self.cross_check(did, &records).await?;
        }
        Ok(Truth {
            did: did.to_string(),
            handle: Some(handle),
            status,
            rev,
            records,
        })
    }

    /// [`Pds::truth`] of each DID, by DID.
    pub async fn truths<'a>(
        &self,
        dids: impl IntoIterator<Item = &'a str>,
    ) -> Result<BTreeMap<String, Truth>, TruthError> {
        let mut out = BTreeMap::new();
        for did in dids {
            out.insert(did.to_string(), self.truth(did).await?);
        }
        Ok(out)
    }

    async fn cross_check(&self, did: &str, records: &Records) -> Result<(), TruthError> {
        let described = self
            .query(
                "com.atproto.repo.describeRepo",
                &[("repo", did)],
                crate::xrpc::Auth::None,
            )
            .await?;
        let mut collections: Vec<String> = described
            .get("collections")
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        collections.extend(records.keys().map(|(c, _)| c.clone()));
        collections.sort();
        collections.dedup();
        for collection in collections {
            let listed: BTreeMap<String, String> = self
                .list_records(did, &collection)
                .await?
                .into_iter()
                .map(|r| {
                    let rkey = r.uri.rsplit('/').next().unwrap_or_default().to_string();
                    (rkey, r.cid)
                })
                .collect();
            let walked: BTreeMap<String, String> = records
                .iter()
                .filter(|((c, _), _)| *c == collection)
                .map(|((_, rkey), cid)| (rkey.clone(), cid.clone()))
                .collect();
            if listed != walked {
                return Err(TruthError::Mismatch {
                    did: did.to_string(),
                    collection,
                    detail: format!("getRepo {walked:?}, listRecords {listed:?}"),
                });
            }
        }
        Ok(())
    }
}

/// The revision and records of a repository CAR.
pub fn walk_car(did: &str, car: Vec<u8>) -> Result<(Option<String>, Records), TruthError> {
    let repo_error = |detail: String| TruthError::Repo {
        did: did.to_string(),
        detail,
    };
    let repo = Repo::from_shared(Arc::from(car), CarOptions::default())
        .map_err(|e| repo_error(e.to_string()))?;
    if repo.commit.did != did {
        return Err(repo_error(format!("the commit is for {}", repo.commit.did)));
    }
    let mut records = Records::new();
    repo.walk(|r| {
        records.insert(
            (r.collection.to_string(), r.rkey.to_string()),
            r.cid.to_string(),
        );
        Ok::<(), std::convert::Infallible>(())
    })
    .map_err(|e| repo_error(e.to_string()))?;
    Ok((repo.commit.rev.as_deref().map(str::to_owned), records))
}
