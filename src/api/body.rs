//! The body of an upload (`PUT` of a file, `PATCH` of a chunk) as callers hand it to the
//! client: bytes already in memory, or a stream of them read as they are sent.
//!
//! This module must not read files or know where the bytes come from (the uploader does),
//! and keeps the HTTP library's body type to itself: callers see `Body` only.

use bytes::Bytes;
use futures::{Stream, TryStreamExt};

/// What an upload sends. The client checks a body whose length it knows against the length
/// announced with it.
pub struct Body {
    inner: reqwest::Body,
}

impl Body {
    /// A body of a stream of pieces, sent as they come; a piece that is an error ends the
    /// request with it (the upload fails and is retried).
    pub fn stream<S, B>(pieces: S) -> Body
    where
        S: Stream<Item = std::io::Result<B>> + Send + 'static,
        B: Into<Bytes> + 'static,
    {
        Body {
            inner: reqwest::Body::wrap_stream(pieces.map_ok(Into::into)),
        }
    }

    /// The body's length, when it is in memory (a stream's is not known before it is sent).
    pub(super) fn known_len(&self) -> Option<u64> {
        self.inner.as_bytes().map(|b| b.len() as u64)
    }

    pub(super) fn into_inner(self) -> reqwest::Body {
        self.inner
    }
}

impl From<Bytes> for Body {
    fn from(bytes: Bytes) -> Body {
        Body {
            inner: reqwest::Body::from(bytes),
        }
    }
}

impl From<Vec<u8>> for Body {
    fn from(bytes: Vec<u8>) -> Body {
        Body::from(Bytes::from(bytes))
    }
}

impl From<String> for Body {
    fn from(text: String) -> Body {
        Body::from(Bytes::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_body_in_memory_knows_its_length() {
        assert_eq!(Body::from(vec![0u8; 10]).known_len(), Some(10));
        assert_eq!(Body::from(String::from("abc")).known_len(), Some(3));
        let stream = Body::stream(futures::stream::empty::<std::io::Result<Vec<u8>>>());
        assert_eq!(stream.known_len(), None);
    }
}
