//! Capped zstd decompression of Jetstream `compress=true` messages.
//!
//! Each message is a standalone zstd frame made with Jetstream's dictionary. A hostile or
//! broken server could send a tiny frame that inflates to gigabytes, so output is capped
//! at `max` bytes and the decoder's window is limited to what `max` needs.

use std::io::Read;

use bytes::Bytes;

/// Why a message could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DecompressError {
    /// It inflates past the limit.
    #[error("decompresses to more than {max} bytes")]
    TooLarge { max: usize },
    /// It is not a valid zstd frame for this dictionary.
    #[error("zstd: {0}")]
    Corrupt(std::io::Error),
}

/// A decoder with the dictionary loaded once (loading costs ~100 µs; messages are ~500 B).
pub(crate) struct Decompressor {
    bulk: zstd::bulk::Decompressor<'static>,
    dictionary: crate::config::ZstdDictionary,
    max: usize,
}

impl Decompressor {
    pub(crate) fn new(
        dictionary: &crate::config::ZstdDictionary,
        max: usize,
    ) -> std::io::Result<Self> {
        Ok(Decompressor {
            bulk: zstd::bulk::Decompressor::with_dictionary(dictionary.as_bytes())?,
            dictionary: dictionary.clone(),
            max,
        })
    }

    /// Decompress one message, at most `max` bytes out.
    pub(crate) fn decompress(&mut self, src: &[u8]) -> Result<Bytes, DecompressError> {
        // Fast path: the frame header states its size (Jetstream's encoder writes it), so
        // allocate exactly that and decode in one call, no window buffer needed.
        if let Ok(Some(size)) = zstd::zstd_safe::get_frame_content_size(src) {
            if size > self.max as u64 {
                return Err(DecompressError::TooLarge { max: self.max });
            }
            let mut out = Vec::with_capacity(size as usize);
            if self.bulk.decompress_to_buffer(src, &mut out).is_ok() {
                return Ok(Bytes::from(out));
            }
            // A lying header or several frames: let the capped stream decide.
        }
        self.decompress_stream(src)
    }

    /// Unknown size: stream through a decoder whose window fits `max`, reading at most
    /// `max + 1` bytes to tell "too large" from "exactly max".
    fn decompress_stream(&self, src: &[u8]) -> Result<Bytes, DecompressError> {
        let mut decoder = zstd::stream::read::Decoder::with_dictionary(
            std::io::BufReader::new(src),
            self.dictionary.as_bytes(),
        )
        .map_err(DecompressError::Corrupt)?;
        // The smallest window log (zstd minimum 10) covering `max`; a frame asking for a
        // bigger window is refused instead of allocating it.
        let window_log = (usize::BITS - self.max.saturating_sub(1).leading_zeros()).clamp(10, 31);
        decoder
            .window_log_max(window_log)
            .map_err(DecompressError::Corrupt)?;
        let mut out = Vec::new();
        decoder
            .take(self.max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                if e.to_string().contains("Frame requires too much memory") {
                    DecompressError::TooLarge { max: self.max }
                } else {
                    DecompressError::Corrupt(e)
                }
            })?;
        if out.len() > self.max {
            return Err(DecompressError::TooLarge { max: self.max });
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ZstdDictionary;

    #[test]
    fn bundled_dictionary_loads() {
        let d = ZstdDictionary::bundled();
        assert_eq!(d.as_bytes().len(), 112_640);
        Decompressor::new(&d, 1 << 20).expect("jetstream dictionary");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut d = Decompressor::new(&ZstdDictionary::bundled(), 1 << 20).expect("dict");
        for input in [
            &b""[..],
            b"{}",
            &[0x28, 0xb5, 0x2f, 0xfd],
            &[0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0],
        ] {
            assert!(d.decompress(input).is_err(), "{input:?}");
        }
    }
}
