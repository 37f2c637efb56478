//! A small XRPC client for the reference AppView (`@atproto/bsky`): the
//! reads that skyhouse's counts, handles and feeds are compared with.

use std::time::Duration;

use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::xrpc::{self, XrpcError};

/// How long one call may take (a guard against a hung server).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The most URIs `app.bsky.feed.getPosts` and actors
/// `app.bsky.actor.getProfiles` take per call (their lexicons' limit).
const BATCH: usize = 25;

/// Who an AppView read is made as. The AppView's answers differ: a viewer
/// gets `viewer` fields and block/mute filtering; nobody (in dev-env) sees
/// deactivated or taken-down accounts except through the admin role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Viewer<'a> {
    /// No credentials: what a logged-out user sees (the public counts).
    Anonymous,
    /// The AppView's testing shortcut: HTTP Basic `admin:<password>` with
    /// the header `appview-as-did: <did>` reads as that account (standard
    /// credentials, no takedown exemption). Not for `getFeed` (the AppView
    /// would pass the Basic header on to the feed generator).
    As(&'a str),
    /// `Authorization: Bearer <service-auth JWT>`, from
    /// [`crate::Pds::service_auth`] or [`crate::AppViewNetwork::service_auth`]:
    /// `aud` the AppView's DID and `lxm` the method — except for
    /// `app.bsky.feed.getFeed`, where `aud` is the feed generator's DID and
    /// `lxm` `app.bsky.feed.getFeedSkeleton`: the AppView does not check the
    /// audience and passes the token on to the generator, as it does for a
    /// PDS proxying the call.
    Bearer(&'a str),
    /// HTTP Basic `admin:<password>` alone: the admin role, which also sees
    /// taken-down and deactivated accounts. Only routes whose auth is
    /// "optional standard or role" accept it (`getProfile`,
    /// `getPostThread`, `getAuthorFeed`, `getFollowers`, …); `getPosts`,
    /// `getProfiles` and `getFeed` answer 401 `bad issuer`.
    Admin,
}

/// The author of a post, as `app.bsky.actor.defs#profileViewBasic`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileBasic {
    /// The DID.
    pub did: String,
    /// The handle the AppView verified (`handle.invalid` when it did not).
    pub handle: String,
    /// The profile's display name.
    #[serde(default)]
    pub display_name: Option<String>,
}

/// A post as `app.bsky.feed.defs#postView`. Counts the AppView leaves out
/// read as 0, as clients show them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostView {
    /// `at://did/app.bsky.feed.post/rkey`.
    pub uri: String,
    /// The CID of the version the AppView indexed.
    pub cid: String,
    /// The author.
    pub author: ProfileBasic,
    /// The record as lex-JSON.
    pub record: Value,
    /// Likes: one per account (duplicates by one account count once).
    #[serde(default)]
    pub like_count: u64,
    /// Reposts: one per account.
    #[serde(default)]
    pub repost_count: u64,
    /// Direct replies, less those that broke the root's threadgate when
    /// they were indexed.
    #[serde(default)]
    pub reply_count: u64,
    /// Quotes (of the post's version the last quote quoted).
    #[serde(default)]
    pub quote_count: u64,
    /// When the AppView indexed it (or the record's `createdAt` if earlier).
    pub indexed_at: String,
    /// The hydrated embed (quoted post, images, …).
    #[serde(default)]
    pub embed: Option<Value>,
    /// The root post's threadgate view (root posts only).
    #[serde(default)]
    pub threadgate: Option<Value>,
    /// The viewer's state (with a viewer only).
    #[serde(default)]
    pub viewer: Option<Value>,
}

/// A profile as `app.bsky.actor.defs#profileViewDetailed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileView {
    /// The DID.
    pub did: String,
    /// The handle the AppView verified (`handle.invalid` when it did not).
    pub handle: String,
    /// The profile's display name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The profile's description.
    #[serde(default)]
    pub description: Option<String>,
    /// Accounts following this one (one per account).
    #[serde(default)]
    pub followers_count: u64,
    /// Accounts this one follows (one per account).
    #[serde(default)]
    pub follows_count: u64,
    /// Posts, replies included.
    #[serde(default)]
    pub posts_count: u64,
    /// The viewer's state (with a viewer only).
    #[serde(default)]
    pub viewer: Option<Value>,
}

/// One item of a feed, as `app.bsky.feed.defs#feedViewPost`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FeedViewPost {
    /// The hydrated post.
    pub post: PostView,
    /// Why it is there (a repost), when the skeleton said so.
    #[serde(default)]
    pub reason: Option<Value>,
    /// The reply context (root and parent), for replies.
    #[serde(default)]
    pub reply: Option<Value>,
    /// The generator's `feedContext`, passed through.
    #[serde(default)]
    pub feed_context: Option<String>,
}

/// A page of `app.bsky.feed.getFeed`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FeedPage {
    /// The hydrated posts, in the generator's order, less those the AppView
    /// could not hydrate (unknown, deleted, hidden authors) or that the
    /// viewer blocks or mutes.
    pub feed: Vec<FeedViewPost>,
    /// The generator's cursor for the next page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// An XRPC client for one AppView.
#[derive(Debug, Clone)]
pub struct AppView {
    http: reqwest::Client,
    url: String,
    did: String,
    admin_password: String,
}

impl AppView {
    /// A client for the AppView at `url` (`http://127.0.0.1:B`) with DID
    /// `did` and admin password `admin_password`.
    pub fn new(url: &str, did: &str, admin_password: &str) -> AppView {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .expect("testkit: reqwest client builds");
        AppView {
            http,
            url: url.trim_end_matches('/').to_string(),
            did: did.to_string(),
            admin_password: admin_password.to_string(),
        }
    }

    /// The AppView's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The AppView's DID (the `aud` of service-auth tokens for it).
    pub fn did(&self) -> &str {
        &self.did
    }

    fn request(&self, method: Method, nsid: &str, viewer: Viewer<'_>) -> RequestBuilder {
        let req = self
            .http
            .request(method, format!("{}/xrpc/{nsid}", self.url));
        match viewer {
            Viewer::Anonymous => req,
            Viewer::As(did) => req
                .basic_auth("admin", Some(&self.admin_password))
                .header("appview-as-did", did),
            Viewer::Bearer(token) => req.bearer_auth(token),
            Viewer::Admin => req.basic_auth("admin", Some(&self.admin_password)),
        }
    }

    /// Any query (`GET /xrpc/<nsid>?params`) as `viewer`, its JSON output:
    /// for reads this client has no typed method for (`getPostThread`,
    /// `getAuthorFeed`, `getFollowers`, `searchActors`, …).
    pub async fn query(
        &self,
        nsid: &str,
        params: &[(&str, &str)],
        viewer: Viewer<'_>,
    ) -> Result<Value, XrpcError> {
        self.get(nsid, params, viewer).await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        nsid: &str,
        params: &[(&str, &str)],
        viewer: Viewer<'_>,
    ) -> Result<T, XrpcError> {
        let req = self.request(Method::GET, nsid, viewer).query(params);
        let response = xrpc::send(nsid, req).await?;
        xrpc::json_body(nsid, response).await
    }

    /// `app.bsky.feed.getPosts` for any number of URIs (25 per call): the
    /// posts the AppView can show `viewer`, in the order asked. A post it
    /// does not know, or whose author it hides (deactivated, taken down,
    /// deleted), is left out rather than an error.
    pub async fn get_posts(
        &self,
        uris: &[&str],
        viewer: Viewer<'_>,
    ) -> Result<Vec<PostView>, XrpcError> {
        #[derive(Deserialize)]
        struct Out {
            posts: Vec<PostView>,
        }
        let mut posts = Vec::with_capacity(uris.len());
        for chunk in uris.chunks(BATCH) {
            let params: Vec<(&str, &str)> = chunk.iter().map(|uri| ("uris", *uri)).collect();
            let out: Out = self.get("app.bsky.feed.getPosts", &params, viewer).await?;
            posts.extend(out.posts);
        }
        Ok(posts)
    }

    /// One post, `None` when [`AppView::get_posts`] leaves it out.
    pub async fn get_post(
        &self,
        uri: &str,
        viewer: Viewer<'_>,
    ) -> Result<Option<PostView>, XrpcError> {
        Ok(self.get_posts(&[uri], viewer).await?.into_iter().next())
    }

    /// `app.bsky.actor.getProfiles` for any number of DIDs or handles (25
    /// per call): the profiles the AppView can show `viewer`. An account it
    /// does not know, or hides (deactivated, taken down, deleted), is left
    /// out.
    pub async fn get_profiles(
        &self,
        actors: &[&str],
        viewer: Viewer<'_>,
    ) -> Result<Vec<ProfileView>, XrpcError> {
        #[derive(Deserialize)]
        struct Out {
            profiles: Vec<ProfileView>,
        }
        let mut profiles = Vec::with_capacity(actors.len());
        for chunk in actors.chunks(BATCH) {
            let params: Vec<(&str, &str)> = chunk.iter().map(|actor| ("actors", *actor)).collect();
            let out: Out = self
                .get("app.bsky.actor.getProfiles", &params, viewer)
                .await?;
            profiles.extend(out.profiles);
        }
        Ok(profiles)
    }

    /// One profile, `None` when [`AppView::get_profiles`] leaves it out.
    pub async fn get_profile(
        &self,
        actor: &str,
        viewer: Viewer<'_>,
    ) -> Result<Option<ProfileView>, XrpcError> {
        Ok(self
            .get_profiles(&[actor], viewer)
            .await?
            .into_iter()
            .next())
    }

    /// `app.bsky.feed.getFeed`: the AppView looks up the generator record
    /// `feed` (an `at://…/app.bsky.feed.generator/…` URI it has indexed),
    /// resolves the record's `did` to its `#bsky_fg` endpoint, calls
    /// `app.bsky.feed.getFeedSkeleton` there (passing on the caller's
    /// `Authorization` header) and hydrates the posts. See [`Viewer::Bearer`]
    /// for the token a signed-in viewer sends.
    pub async fn get_feed(
        &self,
        feed: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
        viewer: Viewer<'_>,
    ) -> Result<FeedPage, XrpcError> {
        let limit = limit.map(|l| l.to_string());
        let mut params = vec![("feed", feed)];
        if let Some(limit) = &limit {
            params.push(("limit", limit));
        }
        if let Some(cursor) = cursor {
            params.push(("cursor", cursor));
        }
        self.get("app.bsky.feed.getFeed", &params, viewer).await
    }
}
