//! SPDY/3 header blocks: the name/value encoding and the per-direction zlib
//! contexts primed with the SPDY/3 dictionary. Decoding never panics and
//! caps the inflated size.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// Largest inflated header block accepted from a peer.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;
/// Most name/value pairs accepted in one block.
pub const MAX_HEADER_PAIRS: usize = 1024;

/// Words of the SPDY/3 dictionary (draft 3, section 2.6.10.1); each goes on
/// the wire with a 4-byte big-endian length before it.
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail, appended without length prefixes.
const DICT_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,",
    "application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=",
    "gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 zlib dictionary.
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1424);
    for w in DICT_WORDS {
        d.extend_from_slice(&u32::try_from(w.len()).unwrap_or(0).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    d.extend_from_slice(DICT_TAIL.as_bytes());
    d
}

/// Header name/value pairs; names are lowercase, repeated values are
/// joined by NUL as on the wire.
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (first occurrence, first NUL-separated part).
pub fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.split('\0').next().unwrap_or(""))
}

/// Why a header block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// zlib refused the data.
    #[error("spdy header block does not inflate: {0}")]
    Inflate(String),
    /// The inflated block is over [`MAX_HEADER_BLOCK`].
    #[error("spdy header block is over {MAX_HEADER_BLOCK} bytes")]
    TooLarge,
    /// The name/value encoding is malformed.
    #[error("spdy header block is malformed")]
    Malformed,
}

/// The receiving zlib context of one session direction.
#[derive(Debug)]
pub struct Inflater {
    z: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            z: Decompress::new(true),
        }
    }
}

impl Inflater {
    /// Inflates one block (every block of the session, in order, must pass
    /// here) and decodes its pairs.
    pub fn decode(&mut self, block: &[u8]) -> Result<Headers, HeaderError> {
        let raw = self.inflate(block)?;
        parse_pairs(&raw)
    }

    fn inflate(&mut self, block: &[u8]) -> Result<Vec<u8>, HeaderError> {
        let mut out: Vec<u8> = Vec::with_capacity(1024);
        let mut input = block;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(HeaderError::TooLarge);
                }
                out.reserve(out.len().max(1024));
            }
            let before_in = self.z.total_in();
            let before_out = out.len();
            let res = self
                .z
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let consumed = usize::try_from(self.z.total_in() - before_in).unwrap_or(input.len());
            input = input.get(consumed..).unwrap_or(&[]);
            match res {
                Ok(Status::StreamEnd) => return Err(HeaderError::Inflate("stream ended".into())),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z
                        .set_dictionary(&dictionary())
                        .map_err(|e| HeaderError::Inflate(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(HeaderError::Inflate(e.to_string())),
            }
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
            if consumed == 0 && out.len() == before_out && out.len() < out.capacity() {
                return Err(HeaderError::Inflate("no progress".into()));
            }
        }
    }
}

fn parse_pairs(raw: &[u8]) -> Result<Headers, HeaderError> {
    let mut pos = 0usize;
    let take_u32 = |pos: &mut usize| -> Result<usize, HeaderError> {
        let s = raw.get(*pos..*pos + 4).ok_or(HeaderError::Malformed)?;
        *pos += 4;
        usize::try_from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
            .map_err(|_| HeaderError::Malformed)
    };
    let n = take_u32(&mut pos)?;
    if n > MAX_HEADER_PAIRS {
        return Err(HeaderError::Malformed);
    }
    let mut headers = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = take_u32(&mut pos)?;
        let name = raw
            .get(pos..pos.saturating_add(nl))
            .ok_or(HeaderError::Malformed)?;
        pos += nl;
        let vl = take_u32(&mut pos)?;
        let value = raw
            .get(pos..pos.saturating_add(vl))
            .ok_or(HeaderError::Malformed)?;
        pos += vl;
        let name = std::str::from_utf8(name).map_err(|_| HeaderError::Malformed)?;
        let value = std::str::from_utf8(value).map_err(|_| HeaderError::Malformed)?;
        headers.push((name.to_ascii_lowercase(), value.to_string()));
    }
    Ok(headers)
}

/// The sending zlib context of one session direction.
#[derive(Debug)]
pub struct Deflater {
    z: Compress,
}

impl Default for Deflater {
    fn default() -> Self {
        let mut z = Compress::new(Compression::default(), true);
        // A fresh compressor always accepts a dictionary.
        let _ = z.set_dictionary(&dictionary());
        Deflater { z }
    }
}

impl Deflater {
    /// Encodes and compresses one block (sync-flushed, so it stands alone
    /// given the previous blocks).
    pub fn encode(&mut self, headers: &[(&str, &str)]) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&u32::try_from(headers.len()).unwrap_or(0).to_be_bytes());
        for (n, v) in headers {
            raw.extend_from_slice(&u32::try_from(n.len()).unwrap_or(0).to_be_bytes());
            raw.extend_from_slice(n.to_ascii_lowercase().as_bytes());
            raw.extend_from_slice(&u32::try_from(v.len()).unwrap_or(0).to_be_bytes());
            raw.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut input: &[u8] = &raw;
        loop {
            let before = self.z.total_in();
            if self
                .z
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .is_err()
            {
                return out;
            }
            let consumed = usize::try_from(self.z.total_in() - before).unwrap_or(input.len());
            input = input.get(consumed..).unwrap_or(&[]);
            if input.is_empty() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(out.capacity().max(64));
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_has_the_spdy3_length() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn blocks_round_trip_across_a_shared_context() {
        let mut d = Deflater::default();
        let mut i = Inflater::default();
        for k in 0..5 {
            let port = k.to_string();
            let block = d.encode(&[("streamType", "data"), ("port", &port), ("requestID", "0")]);
            let h = i.decode(&block).unwrap();
            assert_eq!(get(&h, "streamtype"), Some("data"));
            assert_eq!(get(&h, "port"), Some(port.as_str()));
        }
        let empty = d.encode(&[]);
        assert!(i.decode(&empty).unwrap().is_empty());
    }

    #[test]
    fn zlib_bomb_is_refused() {
        let mut d = Deflater::default();
        let big = "a".repeat(MAX_HEADER_BLOCK * 2);
        let block = d.encode(&[("x", &big)]);
        assert_eq!(
            Inflater::default().decode(&block),
            Err(HeaderError::TooLarge)
        );
    }

    #[test]
    fn decoder_never_panics_on_random_or_mutated_blocks() {
        let mut rng = crate::testutil::Rng::new(5);
        for _ in 0..3000 {
            let _ = Inflater::default().decode(&rng.bytes(64));
            let _ = parse_pairs(&rng.bytes(64));
        }
        for _ in 0..3000 {
            let mut block = Deflater::default().encode(&[("streamtype", "stdout"), ("port", "80")]);
            let i = (rng.next() as usize) % block.len();
            block[i] ^= rng.next() as u8;
            let _ = Inflater::default().decode(&block);
        }
        // Raw pair encodings with hostile lengths.
        let _ = parse_pairs(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]);
        let _ = parse_pairs(&[0xff, 0xff, 0xff, 0xff]);
    }
}
