//! Validated AT Protocol identifier syntax: DID, handle, NSID, AT-URI, TID,
//! record key, datetime, CID string, language tag.
