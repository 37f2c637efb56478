//! Handle verification flags, shared by `skyhouse indexer` and `skyhouse
//! backfill work`: how a DID document's claimed handle is resolved back
//! (DNS TXT `_atproto.<handle>`, then `/.well-known/atproto-did`).

use anyhow::{anyhow, Result};
use clap::Args;
use skyhouse_identity::HandleConfig;

/// Handle resolution flags.
#[derive(Debug, Clone, Args)]
pub struct HandleArgs {
    /// Nameservers asked for `_atproto.<handle>` TXT records (IP or IP:PORT, comma-separated),
    /// or `none` to skip DNS (HTTPS only). Default: the system's, from /etc/resolv.conf.
    #[arg(long, env = "SKYHOUSE_HANDLE_NAMESERVERS", value_delimiter = ',')]
    pub handle_nameservers: Vec<String>,
    /// Fetch `<URL>/.well-known/atproto-did` with the handle as the Host header instead of
    /// `https://<handle>/.well-known/atproto-did` (a PDS on a test network answers for its own
    /// handles that way). Default: unset = the handle's own HTTPS host.
    #[arg(long, env = "SKYHOUSE_HANDLE_RESOLVER_HTTP")]
    pub handle_resolver_http: Option<String>,
}

impl HandleArgs {
    /// The configuration, checked (no I/O).
    pub fn config(&self) -> Result<HandleConfig> {
        let mut cfg = HandleConfig::default();
        let given: Vec<&str> = self
            .handle_nameservers
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .collect();
        if given.len() == 1 && given[0].eq_ignore_ascii_case("none") {
            cfg.nameservers = Some(Vec::new());
        } else if !given.is_empty() {
            let servers = given
                .iter()
                .map(|s| skyhouse_identity::dns::parse_nameserver(s))
                .collect::<Result<Vec<_>, String>>()
                .map_err(|e| anyhow!("--handle-nameservers: {e} (or `none`)"))?;
            cfg.nameservers = Some(servers);
        }
        cfg.http_base = self.handle_resolver_http.clone();
        cfg.validate()
            .map_err(|e| anyhow!("--handle-resolver-http: {e}"))?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(ns: &[&str], http: Option<&str>) -> HandleArgs {
        HandleArgs {
            handle_nameservers: ns.iter().map(|s| s.to_string()).collect(),
            handle_resolver_http: http.map(str::to_owned),
        }
    }

    #[test]
    fn nameservers_and_the_http_base_are_checked() {
        let cfg = args(&[], None).config().expect("defaults");
        assert_eq!(cfg, HandleConfig::default());
        let cfg = args(&["none"], Some("http://127.0.0.1:2583"))
            .config()
            .expect("none");
        assert_eq!(cfg.nameservers, Some(vec![]));
        assert_eq!(cfg.http_base.as_deref(), Some("http://127.0.0.1:2583"));
        let cfg = args(&["127.0.0.1:5353", "::1"], None)
            .config()
            .expect("list");
        assert_eq!(
            cfg.nameservers,
            Some(vec![
                "127.0.0.1:5353".parse().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ])
        );
        let err = args(&["dns.example"], None).config().unwrap_err();
        assert!(
            err.to_string().starts_with("--handle-nameservers:"),
            "{err}"
        );
        let err = args(&[], Some("ftp://x")).config().unwrap_err();
        assert!(
            err.to_string().starts_with("--handle-resolver-http:"),
            "{err}"
        );
    }
}
