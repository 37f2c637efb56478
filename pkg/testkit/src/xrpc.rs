//! A small XRPC client for the test PDS: accounts, record writes, account
//! state changes, and the reads the truth functions need.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// How long one XRPC call may take before it fails (a guard against a hung
/// PDS, not a performance expectation).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Password of every account the client creates (test accounts only).
const PASSWORD: &str = "skyhouse-test-password";

/// Why an XRPC call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum XrpcError {
    /// The PDS answered with an XRPC error.
    #[error("{method}: HTTP {status} {error}: {message}")]
    Status {
        /// The NSID called.
        method: String,
        /// The HTTP status.
        status: u16,
        /// The XRPC error name (`RepoNotFound`, `InvalidRequest`, …).
        error: String,
        /// The error message.
        message: String,
    },
    /// The request did not complete (connection, timeout).
    #[error("{method}: {source}")]
    Http {
        /// The NSID called.
        method: String,
        /// What went wrong.
        source: reqwest::Error,
    },
    /// The response was not what the method returns.
    #[error("{method}: unexpected response: {detail}")]
    Decode {
        /// The NSID called.
        method: String,
        /// What was wrong.
        detail: String,
    },
}

impl XrpcError {
    /// The XRPC error name, when the PDS answered with one.
    pub fn error_name(&self) -> Option<&str> {
        match self {
            XrpcError::Status { error, .. } => Some(error),
            _ => None,
        }
    }

    /// The HTTP status, when the PDS answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            XrpcError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// An account created on the PDS, with its session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The account's DID (`did:plc:…`).
    pub did: String,
    /// The current handle (updated by [`Pds::update_handle`]).
    pub handle: String,
    /// The session's access token (`Authorization: Bearer …`).
    pub access_jwt: String,
    /// The account's password.
    pub password: String,
}

/// A record written by [`Pds::create_record`] or [`Pds::put_record`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Written {
    /// `at://did/collection/rkey`.
    pub uri: String,
    /// The record's CID.
    pub cid: String,
    /// The revision of the commit that wrote it.
    pub rev: String,
}

impl Written {
    fn part(&self, n: usize) -> &str {
        self.uri
            .strip_prefix("at://")
            .and_then(|rest| rest.split('/').nth(n))
            .unwrap_or_default()
    }

    /// The repository DID of the URI.
    pub fn did(&self) -> &str {
        self.part(0)
    }

    /// The collection of the URI.
    pub fn collection(&self) -> &str {
        self.part(1)
    }

    /// The record key of the URI.
    pub fn rkey(&self) -> &str {
        self.part(2)
    }

    /// `{"uri", "cid"}`: a `com.atproto.repo.strongRef` to this record.
    pub fn strong_ref(&self) -> Value {
        json!({ "uri": self.uri, "cid": self.cid })
    }
}

/// One record of `com.atproto.repo.listRecords`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ListedRecord {
    /// `at://did/collection/rkey`.
    pub uri: String,
    /// The record's CID.
    pub cid: String,
    /// The record as lex-JSON.
    pub value: Value,
}

/// `com.atproto.sync.getRepoStatus`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RepoStatus {
    /// The DID.
    pub did: String,
    /// Whether the account is active.
    pub active: bool,
    /// Why not: `deactivated`, `takendown`, `suspended`, … (absent when active).
    #[serde(default)]
    pub status: Option<String>,
    /// The repository's current revision (absent when not active).
    #[serde(default)]
    pub rev: Option<String>,
}

/// One write of [`Pds::apply_writes`].
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOp {
    /// Create a record (the PDS picks a TID record key when `rkey` is `None`).
    Create {
        /// The collection NSID.
        collection: String,
        /// The record key, if not a fresh TID.
        rkey: Option<String>,
        /// The record.
        value: Value,
    },
    /// Replace the record at `collection/rkey`.
    Update {
        /// The collection NSID.
        collection: String,
        /// The record key.
        rkey: String,
        /// The new record.
        value: Value,
    },
    /// Delete the record at `collection/rkey`.
    Delete {
        /// The collection NSID.
        collection: String,
        /// The record key.
        rkey: String,
    },
}

impl WriteOp {
    /// A create with a TID record key.
    pub fn create(collection: &str, value: Value) -> WriteOp {
        WriteOp::Create {
            collection: collection.to_string(),
            rkey: None,
            value,
        }
    }

    /// A delete of the record `written` names.
    pub fn delete(written: &Written) -> WriteOp {
        WriteOp::Delete {
            collection: written.collection().to_string(),
            rkey: written.rkey().to_string(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            WriteOp::Create {
                collection,
                rkey,
                value,
            } => {
                let mut op = json!({
                    "$type": "com.atproto.repo.applyWrites#create",
                    "collection": collection,
                    "value": value,
                });
                if let Some(rkey) = rkey {
                    op["rkey"] = json!(rkey);
                }
                op
            }
            WriteOp::Update {
                collection,
                rkey,
                value,
            } => json!({
                "$type": "com.atproto.repo.applyWrites#update",
                "collection": collection,
                "rkey": rkey,
                "value": value,
            }),
            WriteOp::Delete { collection, rkey } => json!({
                "$type": "com.atproto.repo.applyWrites#delete",
                "collection": collection,
                "rkey": rkey,
            }),
        }
    }
}

/// Who a call authenticates as.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// No credentials.
    None,
    /// An account's session.
    User(&'a Account),
    /// The PDS admin (HTTP Basic `admin:<password>`).
    Admin,
}

/// An XRPC client for one PDS.
#[derive(Debug, Clone)]
pub struct Pds {
    http: reqwest::Client,
    url: String,
    admin_password: String,
}

impl Pds {
    /// A client for the PDS at `url` (`http://127.0.0.1:P`).
    pub fn new(url: &str, admin_password: &str) -> Pds {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("testkit: reqwest client builds");
        Pds {
            http,
            url: url.trim_end_matches('/').to_string(),
            admin_password: admin_password.to_string(),
        }
    }

    /// The PDS's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, method: Method, nsid: &str, auth: Auth<'_>) -> RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}/xrpc/{nsid}", self.url));
        match auth {
            Auth::None => req,
            Auth::User(account) => req.bearer_auth(&account.access_jwt),
            Auth::Admin => req.basic_auth("admin", Some(&self.admin_password)),
        }
    }

    async fn send(&self, nsid: &str, req: RequestBuilder) -> Result<reqwest::Response, XrpcError> {
        send(nsid, req).await
    }

    async fn json<T: DeserializeOwned>(
        nsid: &str,
        response: reqwest::Response,
    ) -> Result<T, XrpcError> {
        json_body(nsid, response).await
    }

    /// A query (`GET /xrpc/<nsid>?params`), its JSON output.
    pub async fn query(
        &self,
        nsid: &str,
        params: &[(&str, &str)],
        auth: Auth<'_>,
    ) -> Result<Value, XrpcError> {
        let response = self
            .send(nsid, self.request(Method::GET, nsid, auth).query(params))
            .await?;
        Pds::json(nsid, response).await
    }

    /// A procedure (`POST /xrpc/<nsid>` with a JSON body; `null` sends none,
    /// for methods without input), its JSON output (`null` when the method
    /// returns nothing).
    pub async fn procedure(
        &self,
        nsid: &str,
        body: &Value,
        auth: Auth<'_>,
    ) -> Result<Value, XrpcError> {
        let mut req = self.request(Method::POST, nsid, auth);
        if !body.is_null() {
            req = req.json(body);
        }
        let response = self.send(nsid, req).await?;
        let bytes = response.bytes().await.map_err(|source| XrpcError::Http {
            method: nsid.to_string(),
            source,
        })?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| XrpcError::Decode {
            method: nsid.to_string(),
            detail: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
        })
    }

    // --- accounts -----------------------------------------------------------

    /// `com.atproto.server.createAccount`: a new account with `handle`
    /// (which must end in the PDS's handle domain, `.test`), logged in.
    pub async fn create_account(&self, handle: &str) -> Result<Account, XrpcError> {
        let nsid = "com.atproto.server.createAccount";
        let local = handle.split('.').next().unwrap_or(handle);
        let body = json!({
            "handle": handle,
            "email": format!("{local}@example.com"),
            "password": PASSWORD,
        });
        let out = self.procedure(nsid, &body, Auth::None).await?;
        Ok(Account {
            did: string_field(nsid, &out, "did")?,
            handle: string_field(nsid, &out, "handle")?,
            access_jwt: string_field(nsid, &out, "accessJwt")?,
            password: PASSWORD.to_string(),
        })
    }

    /// `com.atproto.server.createSession`: a fresh access token for
    /// `account` (e.g. after reactivation).
    pub async fn login(&self, account: &mut Account) -> Result<(), XrpcError> {
        let nsid = "com.atproto.server.createSession";
        let body = json!({ "identifier": account.did, "password": account.password });
        let out = self.procedure(nsid, &body, Auth::None).await?;
        account.access_jwt = string_field(nsid, &out, "accessJwt")?;
        Ok(())
    }

    /// `com.atproto.identity.updateHandle`, and `account.handle` follows.
    pub async fn update_handle(
        &self,
        account: &mut Account,
        handle: &str,
    ) -> Result<(), XrpcError> {
        let body = json!({ "handle": handle });
        self.procedure(
            "com.atproto.identity.updateHandle",
            &body,
            Auth::User(account),
        )
        .await?;
        account.handle = handle.to_string();
        Ok(())
    }

    /// `com.atproto.server.deactivateAccount` (the firehose gets an
    /// `#account` event with `active: false, status: deactivated`).
    pub async fn deactivate_account(&self, account: &Account) -> Result<(), XrpcError> {
        self.procedure(
            "com.atproto.server.deactivateAccount",
            &json!({}),
            Auth::User(account),
        )
        .await
        .map(drop)
    }

    /// `com.atproto.server.activateAccount`.
    pub async fn activate_account(&self, account: &Account) -> Result<(), XrpcError> {
        self.procedure(
            "com.atproto.server.activateAccount",
            &Value::Null,
            Auth::User(account),
        )
        .await
        .map(drop)
    }

    /// `com.atproto.admin.deleteAccount`: the account and its repository are
    /// gone, and so are its commits from the firehose's replay (SPEC §9); the
    /// firehose gets an `#account` event with `status: deleted`.
    pub async fn delete_account(&self, did: &str) -> Result<(), XrpcError> {
        self.procedure(
            "com.atproto.admin.deleteAccount",
            &json!({ "did": did }),
            Auth::Admin,
        )
        .await
        .map(drop)
    }

    /// `com.atproto.admin.updateSubjectStatus`: take the repository down
    /// (`applied = true`) or restore it (`false`).
    pub async fn takedown(&self, did: &str, applied: bool) -> Result<(), XrpcError> {
        let body = json!({
            "subject": { "$type": "com.atproto.admin.defs#repoRef", "did": did },
            "takedown": { "applied": applied, "ref": "skyhouse-test" },
        });
        self.procedure("com.atproto.admin.updateSubjectStatus", &body, Auth::Admin)
            .await
            .map(drop)
    }

    // --- records ------------------------------------------------------------

    /// `com.atproto.repo.createRecord` with a TID record key chosen by the PDS.
    pub async fn create_record(
        &self,
        account: &Account,
        collection: &str,
        record: Value,
    ) -> Result<Written, XrpcError> {
        let body = json!({ "repo": account.did, "collection": collection, "record": record });
        self.write("com.atproto.repo.createRecord", account, &body)
            .await
    }

    /// `com.atproto.repo.createRecord` with a given record key (`self` for a
    /// profile, the post's rkey for a threadgate).
    pub async fn create_record_with_rkey(
        &self,
        account: &Account,
        collection: &str,
        rkey: &str,
        record: Value,
    ) -> Result<Written, XrpcError> {
        let body = json!({ "repo": account.did, "collection": collection, "rkey": rkey, "record": record });
        self.write("com.atproto.repo.createRecord", account, &body)
            .await
    }

    /// `com.atproto.repo.putRecord`: create or replace (an edit) the record
    /// at `collection/rkey`.
    pub async fn put_record(
        &self,
        account: &Account,
        collection: &str,
        rkey: &str,
        record: Value,
    ) -> Result<Written, XrpcError> {
        let body = json!({ "repo": account.did, "collection": collection, "rkey": rkey, "record": record });
        self.write("com.atproto.repo.putRecord", account, &body)
            .await
    }

    async fn write(
        &self,
        nsid: &str,
        account: &Account,
        body: &Value,
    ) -> Result<Written, XrpcError> {
        let out = self.procedure(nsid, body, Auth::User(account)).await?;
        Ok(Written {
            uri: string_field(nsid, &out, "uri")?,
            cid: string_field(nsid, &out, "cid")?,
            rev: out
                .pointer("/commit/rev")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        })
    }

    /// `com.atproto.repo.deleteRecord`; returns the deleting commit's rev.
    pub async fn delete_record(
        &self,
        account: &Account,
        collection: &str,
        rkey: &str,
    ) -> Result<String, XrpcError> {
        let body = json!({ "repo": account.did, "collection": collection, "rkey": rkey });
        let out = self
            .procedure("com.atproto.repo.deleteRecord", &body, Auth::User(account))
            .await?;
        Ok(out
            .pointer("/commit/rev")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string())
    }

    /// `com.atproto.repo.applyWrites`: every write in one commit, in order.
    /// Unlike the AppView, the PDS accepts several likes, reposts or follows
    /// of one subject by one account, which is how a test makes duplicates.
    /// The result has, per write, the record written (`None` for a delete),
    /// each with the commit's rev.
    pub async fn apply_writes(
        &self,
        account: &Account,
        writes: &[WriteOp],
    ) -> Result<Vec<Option<Written>>, XrpcError> {
        let nsid = "com.atproto.repo.applyWrites";
        let body = json!({
            "repo": account.did,
            "writes": writes.iter().map(WriteOp::to_json).collect::<Vec<_>>(),
        });
        let out = self.procedure(nsid, &body, Auth::User(account)).await?;
        let rev = out
            .pointer("/commit/rev")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let results = out
            .get("results")
            .and_then(Value::as_array)
            .ok_or_else(|| XrpcError::Decode {
                method: nsid.to_string(),
                detail: format!("no results in {out}"),
            })?;
        if results.len() != writes.len() {
            return Err(XrpcError::Decode {
                method: nsid.to_string(),
                detail: format!(
                    "{} results for {} writes: {out}",
                    results.len(),
                    writes.len()
                ),
            });
        }
        results
            .iter()
            .map(|result| {
                if result.get("uri").is_none() {
                    return Ok(None); // a #deleteResult
                }
                Ok(Some(Written {
                    uri: string_field(nsid, result, "uri")?,
                    cid: string_field(nsid, result, "cid")?,
                    rev: rev.clone(),
                }))
            })
            .collect()
    }

    // --- reads --------------------------------------------------------------

    /// `com.atproto.sync.getRepo` as the admin (so deactivated and taken-down
    /// repositories are readable too): the repository CAR.
    pub async fn get_repo(&self, did: &str) -> Result<Vec<u8>, XrpcError> {
        let nsid = "com.atproto.sync.getRepo";
        let req = self
            .request(Method::GET, nsid, Auth::Admin)
            .query(&[("did", did)]);
        let response = self.send(nsid, req).await?;
        let bytes = response.bytes().await.map_err(|source| XrpcError::Http {
            method: nsid.to_string(),
            source,
        })?;
        Ok(bytes.to_vec())
    }

    /// `com.atproto.repo.listRecords`, every page, in the PDS's order.
    pub async fn list_records(
        &self,
        did: &str,
        collection: &str,
    ) -> Result<Vec<ListedRecord>, XrpcError> {
        let nsid = "com.atproto.repo.listRecords";
        #[derive(Deserialize)]
        struct Page {
            records: Vec<ListedRecord>,
            #[serde(default)]
            cursor: Option<String>,
        }
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = vec![("repo", did), ("collection", collection), ("limit", "100")];
            if let Some(c) = &cursor {
                params.push(("cursor", c));
            }
            let response = self
                .send(
                    nsid,
                    self.request(Method::GET, nsid, Auth::None).query(&params),
                )
                .await?;
            let page: Page = Pds::json(nsid, response).await?;
            let done = page.records.is_empty() || page.cursor.is_none();
            out.extend(page.records);
            if done {
                return Ok(out);
            }
            cursor = page.cursor;
        }
    }

    /// `com.atproto.sync.getRepoStatus`.
    pub async fn repo_status(&self, did: &str) -> Result<RepoStatus, XrpcError> {
        let nsid = "com.atproto.sync.getRepoStatus";
        let response = self
            .send(
                nsid,
                self.request(Method::GET, nsid, Auth::None)
                    .query(&[("did", did)]),
            )
            .await?;
        Pds::json(nsid, response).await
    }

    /// The account's handle as the PDS has it (`com.atproto.admin.getAccountInfo`).
    pub async fn handle_of(&self, did: &str) -> Result<String, XrpcError> {
        let nsid = "com.atproto.admin.getAccountInfo";
        let out = self.query(nsid, &[("did", did)], Auth::Admin).await?;
        string_field(nsid, &out, "handle")
    }

    /// `com.atproto.identity.resolveHandle`.
    pub async fn resolve_handle(&self, handle: &str) -> Result<String, XrpcError> {
        let nsid = "com.atproto.identity.resolveHandle";
        let out = self.query(nsid, &[("handle", handle)], Auth::None).await?;
        string_field(nsid, &out, "did")
    }

    /// `com.atproto.sync.listRepos`, every page: `(did, head rev, active)`.
    pub async fn list_repos(&self) -> Result<Vec<(String, String, bool)>, XrpcError> {
        let nsid = "com.atproto.sync.listRepos";
        #[derive(Deserialize)]
        struct Repo {
            did: String,
            rev: String,
            #[serde(default = "yes")]
            active: bool,
        }
        fn yes() -> bool {
            true
        }
        #[derive(Deserialize)]
        struct Page {
            repos: Vec<Repo>,
            #[serde(default)]
            cursor: Option<String>,
        }
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut params = vec![("limit", "1000")];
            if let Some(c) = &cursor {
                params.push(("cursor", c));
            }
            let response = self
                .send(
                    nsid,
                    self.request(Method::GET, nsid, Auth::None).query(&params),
                )
                .await?;
            let page: Page = Pds::json(nsid, response).await?;
            let done = page.repos.is_empty() || page.cursor.is_none();
            out.extend(page.repos.into_iter().map(|r| (r.did, r.rev, r.active)));
            if done {
                return Ok(out);
            }
            cursor = page.cursor;
        }
    }

    /// `com.atproto.server.getServiceAuth`: a service-auth JWT signed with
    /// the account's key, for audience `aud` and method `lxm`.
    pub async fn service_auth(
        &self,
        account: &Account,
        aud: &str,
        lxm: Option<&str>,
    ) -> Result<String, XrpcError> {
        let nsid = "com.atproto.server.getServiceAuth";
        let mut params = vec![("aud", aud)];
        if let Some(lxm) = lxm {
            params.push(("lxm", lxm));
        }
        let out = self.query(nsid, &params, Auth::User(account)).await?;
        string_field(nsid, &out, "token")
    }

    /// Whether the PDS answers `GET /xrpc/_health`.
    pub async fn healthy(&self) -> bool {
        let url = format!("{}/xrpc/_health", self.url);
        matches!(self.http.get(url).send().await, Ok(r) if r.status() == StatusCode::OK)
    }
}

pub(crate) fn string_field(nsid: &str, out: &Value, field: &str) -> Result<String, XrpcError> {
    out.get(field)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| XrpcError::Decode {
            method: nsid.to_string(),
            detail: format!("no string {field:?} in {out}"),
        })
}

/// Sends an XRPC request: the response when its status is a success,
/// otherwise the XRPC error it carries.
pub(crate) async fn send(nsid: &str, req: RequestBuilder) -> Result<reqwest::Response, XrpcError> {
    let response = req.send().await.map_err(|source| XrpcError::Http {
        method: nsid.to_string(),
        source,
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let body = response.bytes().await.unwrap_or_default();
    #[derive(Deserialize, Default)]
    struct ErrorBody {
        #[serde(default)]
        error: String,
        #[serde(default)]
        message: String,
    }
    let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or_else(|_| ErrorBody {
        error: String::new(),
        message: String::from_utf8_lossy(&body).into_owned(),
    });
    Err(XrpcError::Status {
        method: nsid.to_string(),
        status: status.as_u16(),
        error: parsed.error,
        message: parsed.message,
    })
}

/// The JSON body of a successful XRPC response.
pub(crate) async fn json_body<T: DeserializeOwned>(
    nsid: &str,
    response: reqwest::Response,
) -> Result<T, XrpcError> {
    let bytes = response.bytes().await.map_err(|source| XrpcError::Http {
        method: nsid.to_string(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| XrpcError::Decode {
        method: nsid.to_string(),
        detail: format!("{e}: {}", String::from_utf8_lossy(&bytes)),
    })
}
