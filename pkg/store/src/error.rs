//! Store failures and how each is handled.
//!
//! The rule (SPEC §3, "retry unless the data is bad"): a failure is retried
//! unless ClickHouse says the rows themselves cannot be stored (then only
//! those rows are dead-lettered, see the writer's bisection) or that the
//! schema is not what this binary expects (then the service stops with one
//! line, its cursor where it was). Everything else — the network, a
//! timeout, a proxy's 502 page, a truncated or garbled answer, a code in no
//! list — is retried with capped backoff. A wrong "retry" only waits; a wrong
//! "permanent" loses rows, so unknown means retry.

use std::fmt;

/// Store failures, sorted by what the caller should do with them.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A setting or argument is invalid (the message names it). No I/O was done.
    #[error("{0}")]
    Config(String),
    /// ClickHouse refused the values: parse or type errors, sizes past a
    /// limit. Retrying the same rows cannot help; the writer bisects the
    /// batch and dead-letters only the refused rows.
    #[error("ClickHouse refused the rows: {0}")]
    BadRows(String),
    /// The schema is not what this binary expects (unknown table, column,
    /// database, identifier or function): usually a binary newer than the
    /// applied migrations. Nothing is dead-lettered; the service stops.
    #[error("ClickHouse schema does not match this binary (run `skyhouse migrate up`): {0}")]
    Schema(String),
    /// The credentials are refused or lack a permission. Nothing is
    /// dead-lettered; the service stops.
    #[error("ClickHouse refused the credentials (check CLICKHOUSE_USERNAME / CLICKHOUSE_PASSWORD and the user's grants): {0}")]
    Access(String),
    /// Worth retrying: the network, a timeout, an overloaded or restarting
    /// server, an answer that is not ClickHouse's, a code in no list.
    #[error("ClickHouse ({reason}): {message}")]
    Transient {
        /// Why, from a closed set (the `reason` label of
        /// `skyhouse_store_retries_total`).
        reason: RetryReason,
        /// One line: what was being done and what came back.
        message: String,
    },
    /// A migration problem (names the migration or file).
    #[error("{0}")]
    Migration(String),
    /// A bug or an impossible state (a panicked task, a malformed statement
    /// template). Not retried.
    #[error("internal: {0}")]
    Internal(String),
}

/// Why a transient failure happened: the `reason` label of the retry metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetryReason {
    /// Connecting, sending or receiving failed (refused, reset, closed).
    Network,
    /// No answer within the configured timeout.
    Timeout,
    /// ClickHouse answered with a code listed as transient (too many parts,
    /// memory limit, read-only replica, ZooKeeper away, …).
    Server,
    /// ClickHouse answered with a code in no list.
    UnknownCode,
    /// An HTTP error without a ClickHouse code (a load balancer's 502 page).
    Http,
    /// An answer that could not be decoded (truncated or garbled).
    Garbled,
}

impl RetryReason {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::Network => "network",
            RetryReason::Timeout => "timeout",
            RetryReason::Server => "server",
            RetryReason::UnknownCode => "unknown_code",
            RetryReason::Http => "http",
            RetryReason::Garbled => "garbled",
        }
    }

    /// Every reason, for metrics exported at 0 from the start.
    pub const ALL: [RetryReason; 6] = [
        RetryReason::Network,
        RetryReason::Timeout,
        RetryReason::Server,
        RetryReason::UnknownCode,
        RetryReason::Http,
        RetryReason::Garbled,
    ];
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a ClickHouse error code means for the rows or the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    /// The values cannot be stored.
    BadRows,
    /// The schema (or the statement) does not fit the server.
    Schema,
    /// Credentials or permissions.
    Access,
    /// Known to pass: retry.
    Transient,
}

/// ClickHouse error codes (`ErrorCodes.cpp`) with what each means here. A
/// code not listed is retried ([`RetryReason::UnknownCode`]).
pub const CODES: &[(u32, CodeKind, &str)] = &[
    // --- the rows are bad: only these values are refused ---
    (6, CodeKind::BadRows, "CANNOT_PARSE_TEXT: a value does not parse as its column type"),
    (26, CodeKind::BadRows, "CANNOT_PARSE_QUOTED_STRING"),
    (27, CodeKind::BadRows, "CANNOT_PARSE_INPUT_ASSERTION_FAILED: a value is malformed"),
    (38, CodeKind::BadRows, "CANNOT_PARSE_DATE"),
    (41, CodeKind::BadRows, "CANNOT_PARSE_DATETIME"),
    (53, CodeKind::BadRows, "TYPE_MISMATCH: a value does not fit its column"),
    (69, CodeKind::BadRows, "ARGUMENT_OUT_OF_BOUND: a value out of its type's range"),
    (70, CodeKind::BadRows, "CANNOT_CONVERT_TYPE"),
    (72, CodeKind::BadRows, "CANNOT_PARSE_NUMBER"),
    (117, CodeKind::BadRows, "INCORRECT_DATA: the input is not valid for the format"),
    (128, CodeKind::BadRows, "TOO_LARGE_ARRAY_SIZE"),
    (130, CodeKind::BadRows, "CANNOT_READ_ARRAY_FROM_TEXT"),
    (131, CodeKind::BadRows, "TOO_LARGE_STRING_SIZE"),
    (190, CodeKind::BadRows, "SIZES_OF_ARRAYS_DOESNT_MATCH (Nested columns of one row)"),
    (395, CodeKind::BadRows, "FUNCTION_THROW_IF_VALUE_IS_NON_ZERO: a table expression (a MATERIALIZED throwIf, how servers before CONSTRAINT check rows) refused the row"),
    (469, CodeKind::BadRows, "VIOLATED_CONSTRAINT: a table CONSTRAINT refused the row"),
    // --- the schema is wrong: the binary is newer than the migrations, or a statement is ---
    (8, CodeKind::Schema, "THERE_IS_NO_COLUMN"),
    (10, CodeKind::Schema, "NOT_FOUND_COLUMN_IN_BLOCK"),
    (16, CodeKind::Schema, "NO_SUCH_COLUMN_IN_TABLE: the table lacks a column this binary writes"),
    (20, CodeKind::Schema, "NUMBER_OF_COLUMNS_DOESNT_MATCH"),
    (42, CodeKind::Schema, "NUMBER_OF_ARGUMENTS_DOESNT_MATCH (a function this server lacks)"),
    (43, CodeKind::Schema, "ILLEGAL_TYPE_OF_ARGUMENT (a column of another type than expected)"),
    (44, CodeKind::Schema, "ILLEGAL_COLUMN"),
    (46, CodeKind::Schema, "UNKNOWN_FUNCTION: the server is too old for the statement"),
    (47, CodeKind::Schema, "UNKNOWN_IDENTIFIER: a column this binary reads is missing"),
    (48, CodeKind::Schema, "NOT_IMPLEMENTED on this server version"),
    (60, CodeKind::Schema, "UNKNOWN_TABLE: migrations not applied"),
    (62, CodeKind::Schema, "SYNTAX_ERROR: a statement this server cannot parse"),
    (81, CodeKind::Schema, "UNKNOWN_DATABASE: migrations not applied"),
    (115, CodeKind::Schema, "UNKNOWN_SETTING: a setting this server lacks"),
    (184, CodeKind::Schema, "ILLEGAL_AGGREGATION"),
    (215, CodeKind::Schema, "NOT_AN_AGGREGATE"),
    (352, CodeKind::Schema, "AMBIGUOUS_COLUMN_NAME"),
    // --- access ---
    (164, CodeKind::Access, "READONLY: the user may not write"),
    (192, CodeKind::Access, "UNKNOWN_USER"),
    (193, CodeKind::Access, "WRONG_PASSWORD"),
    (194, CodeKind::Access, "REQUIRED_PASSWORD"),
    (497, CodeKind::Access, "ACCESS_DENIED: a grant is missing"),
    (516, CodeKind::Access, "AUTHENTICATION_FAILED"),
    // --- known to pass (any other code is retried too; these are named for the metric) ---
    (3, CodeKind::Transient, "UNEXPECTED_END_OF_FILE: the request was cut short"),
    (23, CodeKind::Transient, "CANNOT_READ_FROM_ISTREAM"),
    (24, CodeKind::Transient, "CANNOT_WRITE_TO_OSTREAM"),
    (32, CodeKind::Transient, "ATTEMPT_TO_READ_AFTER_EOF: the request body was cut short"),
    (33, CodeKind::Transient, "CANNOT_READ_ALL_DATA: the request body was cut short"),
    (159, CodeKind::Transient, "TIMEOUT_EXCEEDED"),
    (202, CodeKind::Transient, "TOO_MANY_SIMULTANEOUS_QUERIES"),
    (209, CodeKind::Transient, "SOCKET_TIMEOUT"),
    (210, CodeKind::Transient, "NETWORK_ERROR"),
    (225, CodeKind::Transient, "NO_ZOOKEEPER"),
    (236, CodeKind::Transient, "ABORTED"),
    (241, CodeKind::Transient, "MEMORY_LIMIT_EXCEEDED"),
    (242, CodeKind::Transient, "TABLE_IS_READ_ONLY: a replica lost ZooKeeper"),
    (252, CodeKind::Transient, "TOO_MANY_PARTS: merges are behind"),
    (279, CodeKind::Transient, "ALL_CONNECTION_TRIES_FAILED (Distributed)"),
    (285, CodeKind::Transient, "TOO_FEW_LIVE_REPLICAS (insert_quorum)"),
    (286, CodeKind::Transient, "UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE"),
    (319, CodeKind::Transient, "UNKNOWN_STATUS_OF_INSERT: retry; the insert is idempotent"),
    (394, CodeKind::Transient, "QUERY_WAS_CANCELLED"),
    (425, CodeKind::Transient, "SYSTEM_ERROR"),
    (999, CodeKind::Transient, "KEEPER_EXCEPTION"),
    (1000, CodeKind::Transient, "POCO_EXCEPTION (often a network error inside the server)"),
];

/// Codes that say a server the statement needs is away (a shard with no
/// replica answering, a lost ZooKeeper session, the network between
/// servers), not that the statement is wrong: transient, and for the SQL
/// explorer a 503 rather than the caller's error.
pub const OUTAGE_CODES: &[u32] = &[209, 210, 225, 242, 279, 999];

/// What `code` means ([`CODES`]); `None` for a code in no list.
pub fn code_kind(code: u32) -> Option<CodeKind> {
    CODES
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, kind, _)| *kind)
}

/// The ClickHouse error code in an error text (`Code: 60. DB::Exception…`
/// on current servers, `Code: 60, e.displayText() = …` on 18.16).
pub fn parse_code(text: &str) -> Option<u32> {
    let at = text.find("Code: ")? + "Code: ".len();
    let digits: String = text[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

/// `e` and its causes, `a: b: c`, skipping a cause whose text is already
/// there: a refused connection reads "network error: client error (Connect):
/// tcp connect error: Connection refused", not only "client error (Connect)".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// Longest error text kept in a message (a proxy's HTML page can be long).
const MAX_MESSAGE: usize = 300;

/// `text` on one line (whitespace runs collapsed), at most [`MAX_MESSAGE`]
/// characters.
pub fn one_line(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > MAX_MESSAGE {
            let end = out
                .char_indices()
                .nth(MAX_MESSAGE)
                .map_or(out.len(), |(i, _)| i);
            out.truncate(end);
            out.push('…');
            break;
        }
    }
    out
}

impl StoreError {
    /// Whether retrying could help.
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Transient { .. })
    }

    /// Whether a server the statement needed was away: the network, a
    /// timeout, a proxy's page, or ClickHouse's code for a shard with no
    /// replica answering, a lost ZooKeeper session ([`OUTAGE_CODES`]).
    pub fn is_outage(&self) -> bool {
        match self {
            StoreError::Transient {
                reason: RetryReason::Network | RetryReason::Timeout | RetryReason::Http,
                ..
            } => true,
            StoreError::Transient {
                reason: RetryReason::Server,
                message,
            } => parse_code(message).is_some_and(|c| OUTAGE_CODES.contains(&c)),
            _ => false,
        }
    }

    /// The retry reason of a transient error.
    pub fn retry_reason(&self) -> Option<RetryReason> {
        match self {
            StoreError::Transient { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// What ClickHouse itself said (from `Code: …` on, one line), for an
    /// error it answered with a code; `None` for the network, a timeout, a
    /// proxy's page, a garbled answer or an error of this crate. The SQL
    /// explorer shows it: the statement is the caller's own.
    pub fn server_message(&self) -> Option<&str> {
        let message = match self {
            StoreError::BadRows(m) | StoreError::Schema(m) | StoreError::Access(m) => m,
            StoreError::Transient {
                reason: RetryReason::Server | RetryReason::UnknownCode,
                message,
            } => message,
            _ => return None,
        };
        message.find("Code: ").map(|at| &message[at..])
    }

    /// A transient error of `reason`.
    pub fn transient(reason: RetryReason, message: impl Into<String>) -> StoreError {
        StoreError::Transient {
            reason,
            message: message.into(),
        }
    }

    /// A statement that did not answer within `timeout` (`context` names it).
    pub fn timed_out(context: &str, timeout: std::time::Duration) -> StoreError {
        StoreError::transient(
            RetryReason::Timeout,
            format!("{context}: no answer within {timeout:?}"),
        )
    }

    /// Sort a client error into its kind, with `context` (what was being
    /// done: a table or a statement name) in the message.
    pub fn classify(e: clickhouse::error::Error, context: &str) -> StoreError {
        use clickhouse::error::Error as E;
        let msg = format!("{context}: {}", one_line(&with_causes(&e)));
        match &e {
            E::Network(_) => StoreError::transient(RetryReason::Network, msg),
            E::TimedOut => StoreError::transient(RetryReason::Timeout, msg),
            E::BadResponse(text) => match parse_code(text) {
                Some(code) => match code_kind(code) {
                    Some(CodeKind::BadRows) => StoreError::BadRows(msg),
                    Some(CodeKind::Schema) => StoreError::Schema(msg),
                    Some(CodeKind::Access) => StoreError::Access(msg),
                    Some(CodeKind::Transient) => StoreError::transient(RetryReason::Server, msg),
                    None => StoreError::transient(RetryReason::UnknownCode, msg),
                },
                None => StoreError::transient(RetryReason::Http, msg),
            },
            E::InvalidParams(_) | E::Unsupported(_) => StoreError::Config(msg),
            // Decoding the answer failed: truncated, garbled, or not ClickHouse's.
            _ => StoreError::transient(RetryReason::Garbled, msg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clickhouse::error::Error as E;

    fn bad(text: &str) -> StoreError {
        StoreError::classify(E::BadResponse(text.to_owned()), "t")
    }

    #[test]
    fn codes_are_listed_once() {
        let mut seen = std::collections::HashSet::new();
        for (code, _, why) in CODES {
            assert!(seen.insert(*code), "code {code} listed twice");
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn a_network_error_keeps_its_cause() {
        // What a refused connection looks like: the client's error wraps the
        // connector's, which wraps the OS error that says what happened.
        let refused =
            std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        #[derive(Debug)]
        struct Wrap(&'static str, Box<dyn std::error::Error + Send + Sync>);
        impl std::fmt::Display for Wrap {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for Wrap {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.1)
            }
        }
        let e = clickhouse::error::Error::Network(Box::new(Wrap(
            "client error (Connect)",
            Box::new(Wrap("tcp connect error", Box::new(refused))),
        )));
        let classified = StoreError::classify(e, "version");
        assert_eq!(classified.retry_reason(), Some(RetryReason::Network));
        assert!(
            classified.to_string().ends_with(
                "version: network error: client error (Connect): tcp connect error: Connection refused"
            ),
            "{classified}"
        );
    }

    #[test]
    fn codes_parse_from_old_and_new_servers() {
        assert_eq!(
            parse_code("Code: 60, e.displayText() = DB::Exception: Table x.y doesn't exist., e.what() = DB::Exception"),
            Some(60)
        );
        assert_eq!(
            parse_code("Code: 27. DB::Exception: Cannot parse input. (CANNOT_PARSE_INPUT_ASSERTION_FAILED)"),
            Some(27)
        );
        assert_eq!(
            parse_code("<html><body>502 Bad Gateway</body></html>"),
            None
        );
        assert_eq!(parse_code("Code: abc"), None);
    }

    #[test]
    fn the_three_kinds() {
        assert!(matches!(
            bad("Code: 27. DB::Exception: Cannot parse"),
            StoreError::BadRows(_)
        ));
        assert!(matches!(
            bad("Code: 131, e.displayText() = too large"),
            StoreError::BadRows(_)
        ));
        assert!(matches!(
            bad("Code: 60. DB::Exception: Table doesn't exist"),
            StoreError::Schema(_)
        ));
        assert!(matches!(
            bad("Code: 16. No such column"),
            StoreError::Schema(_)
        ));
        assert!(matches!(
            bad("Code: 516. Authentication failed"),
            StoreError::Access(_)
        ));
        // Transient in practice, permanent before: each must be retried.
        for code in [236, 319, 285, 286, 225, 394, 252, 241, 242] {
            let e = bad(&format!("Code: {code}. DB::Exception: x"));
            assert_eq!(e.retry_reason(), Some(RetryReason::Server), "{code}: {e}");
        }
        assert_eq!(
            bad("Code: 9999. DB::Exception: injected").retry_reason(),
            Some(RetryReason::UnknownCode)
        );
        assert_eq!(
            bad("<html>\n<head><title>502 Bad Gateway</title></head>\n</html>").retry_reason(),
            Some(RetryReason::Http)
        );
        assert_eq!(
            StoreError::classify(E::NotEnoughData, "t").retry_reason(),
            Some(RetryReason::Garbled)
        );
        assert_eq!(
            StoreError::classify(E::TimedOut, "t").retry_reason(),
            Some(RetryReason::Timeout)
        );
    }

    #[test]
    fn an_away_shard_or_zookeeper_is_an_outage() {
        // What 18.16 answers with both servers of a shard stopped, and with
        // ZooKeeper stopped.
        let shard = bad("Code: 279, e.displayText() = DB::NetException: All connection tries failed. Log: Code: 210, e.displayText() = DB::NetException: Connection refused (127.0.0.1:19403)");
        assert_eq!(shard.retry_reason(), Some(RetryReason::Server));
        assert!(shard.is_outage());
        for code in [242, 999, 225] {
            let e = bad(&format!("Code: {code}, e.displayText() = DB::Exception: x"));
            assert_eq!(e.retry_reason(), Some(RetryReason::Server), "{code}: {e}");
            assert!(e.is_outage(), "{code}");
        }
        assert!(StoreError::classify(E::TimedOut, "t").is_outage());
        assert!(!bad("Code: 241. Memory limit").is_outage());
        assert!(!bad("Code: 62. Syntax error").is_outage());
    }

    #[test]
    fn the_server_message_is_what_clickhouse_said() {
        let e = bad("Code: 62, e.displayText() = DB::Exception: Syntax error");
        assert_eq!(
            e.server_message(),
            Some("Code: 62, e.displayText() = DB::Exception: Syntax error")
        );
        assert!(bad("Code: 9999. x").server_message().is_some());
        assert_eq!(bad("<html>502 Bad Gateway</html>").server_message(), None);
        assert_eq!(
            StoreError::classify(E::TimedOut, "t").server_message(),
            None
        );
    }

    #[test]
    fn messages_are_one_bounded_line() {
        let page = format!("<html>\n<body>\n{}\n</body></html>", "x ".repeat(1000));
        let e = bad(&page).to_string();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.len() < MAX_MESSAGE + 100, "{}", e.len());
    }
}
