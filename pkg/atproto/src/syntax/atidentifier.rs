//! AT identifiers: a DID or a handle, wherever the protocol accepts either
//! (XRPC `repo` parameters, AT-URI authorities).

use super::{did, handle, Did, Handle, SyntaxError};

/// Either a [`Did`] or a [`Handle`]. Strings starting with `did:` are parsed
/// as DIDs, everything else as handles.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AtIdentifier {
    /// A DID: stable, use it for keys and storage.
    Did(Did),
    /// A handle: mutable, resolve it before trusting it.
    Handle(Handle),
}

pub(crate) fn check(s: &str) -> Result<(), &'static str> {
    if s.starts_with("did:") {
        did::check(s)
    } else {
        handle::check(s)
    }
}

impl AtIdentifier {
    /// Whether `s` is a valid DID or handle, without allocating.
    pub fn is_valid(s: &str) -> bool {
        check(s).is_ok()
    }

    /// The identifier as written.
    pub fn as_str(&self) -> &str {
        match self {
            AtIdentifier::Did(d) => d.as_str(),
            AtIdentifier::Handle(h) => h.as_str(),
        }
    }

    /// Gives back the owned string without copying.
    pub fn into_string(self) -> String {
        match self {
            AtIdentifier::Did(d) => d.into_string(),
            AtIdentifier::Handle(h) => h.into_string(),
        }
    }

    /// The DID, if this is one.
    pub fn as_did(&self) -> Option<&Did> {
        match self {
            AtIdentifier::Did(d) => Some(d),
            AtIdentifier::Handle(_) => None,
        }
    }

    /// The handle, if this is one.
    pub fn as_handle(&self) -> Option<&Handle> {
        match self {
            AtIdentifier::Handle(h) => Some(h),
            AtIdentifier::Did(_) => None,
        }
    }

    fn parse_owned(s: String) -> Result<Self, SyntaxError> {
        let parsed = if s.starts_with("did:") {
            Did::try_from(s).map(AtIdentifier::Did)
        } else {
            Handle::try_from(s).map(AtIdentifier::Handle)
        };
        parsed.map_err(|e| SyntaxError::AtIdentifier(e.rejected().clone()))
    }
}

impl From<Did> for AtIdentifier {
    fn from(d: Did) -> Self {
        AtIdentifier::Did(d)
    }
}

impl From<Handle> for AtIdentifier {
    fn from(h: Handle) -> Self {
        AtIdentifier::Handle(h)
    }
}

string_traits!(AtIdentifier);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatch() {
        let d: AtIdentifier = "did:plc:abc".parse().expect("valid");
        assert!(d.as_did().is_some() && d.as_handle().is_none());
        let h: AtIdentifier = "Alice.Test".parse().expect("valid");
        assert_eq!(h.as_handle().map(Handle::as_str), Some("Alice.Test"));
        let err = "did:thing".parse::<AtIdentifier>().expect_err("invalid");
        assert!(
            err.to_string()
                .starts_with("invalid AT identifier \"did:thing\""),
            "{err}"
        );
    }
}
