//! Errors that end [`run`](crate::run).

use std::path::PathBuf;

use crate::config::ConfigError;

/// Why [`run`](crate::run) stopped. Network failures are not here: they are retried.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The configuration is invalid (permanent).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The `compress` dictionary was refused by zstd (permanent).
    #[error("zstd_dictionary: {0}")]
    Dictionary(std::io::Error),
    /// A `file://` capture could not be read.
    #[error("{}: {source}", path.display())]
    File {
        /// The capture.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A message in a `file://` capture is over `max_message_size` (or, for a frame file,
    /// its length prefix claims so: often a file that is not a frame file at all).
    #[error("{}: message {index} at byte {offset} is {size} bytes, over max_message_size {max}", path.display())]
    FileMessageTooLarge {
        /// The capture.
        path: PathBuf,
        /// 0-based index of the message in the file.
        index: u64,
        /// Byte offset where the message (or its length prefix) starts.
        offset: u64,
        /// Its size, as far as known (at least `max + 1` for an unterminated line).
        size: u64,
        /// The limit.
        max: usize,
    },
    /// A frame file ends inside a frame.
    #[error("{}: truncated frame {index} at byte {offset}", path.display())]
    Truncated {
        /// The capture.
        path: PathBuf,
        /// 0-based index of the incomplete frame.
        index: u64,
        /// Byte offset where the incomplete frame's length prefix starts.
        offset: u64,
    },
}
