//! RFC 6455 frame codec. The parser takes untrusted bytes and never panics.

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// One decoded frame (payload already unmasked).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Final fragment of a message.
    pub fin: bool,
    /// The opcode (low 4 bits).
    pub opcode: u8,
    /// The unmasked payload.
    pub payload: Vec<u8>,
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Reserved bits set (no extension was negotiated).
    #[error("websocket frame has reserved bits set")]
    Reserved,
    /// Unknown opcode.
    #[error("websocket frame has unknown opcode {0:#x}")]
    Opcode(u8),
    /// Control frame longer than 125 bytes or fragmented.
    #[error("websocket control frame is fragmented or too long")]
    BadControl,
    /// Payload longer than the configured limit.
    #[error("websocket frame payload of {0} bytes is over the limit")]
    TooLong(u64),
    /// The mask bit does not match the direction.
    #[error("websocket frame masking is wrong for its direction")]
    Mask,
    /// A length that is not in its minimal form or has the top bit set.
    #[error("websocket frame length is malformed")]
    Length,
}

/// Parses one frame from the front of `buf`. Returns `Ok(None)` when more
/// bytes are needed, else the frame and the number of bytes it used.
/// `masked` says whether frames must be masked (client to server) or must not.
pub fn parse(
    buf: &[u8],
    max_payload: usize,
    masked: bool,
) -> Result<Option<(Frame, usize)>, FrameError> {
    let (Some(&b0), Some(&b1)) = (buf.first(), buf.get(1)) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || (b1 & 0x7f) > 125 {
                return Err(FrameError::BadControl);
            }
        }
        other => return Err(FrameError::Opcode(other)),
    }
    if (b1 & 0x80 != 0) != masked {
        return Err(FrameError::Mask);
    }
    let mut pos = 2usize;
    let len: u64 = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            pos = 4;
            let l = u64::from(u16::from_be_bytes([b[0], b[1]]));
            if l < 126 {
                return Err(FrameError::Length);
            }
            l
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            pos = 10;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            let l = u64::from_be_bytes(a);
            if l >> 63 != 0 || l <= 0xffff {
                return Err(FrameError::Length);
            }
            l
        }
        l => u64::from(l),
    };
    if len > max_payload as u64 {
        return Err(FrameError::TooLong(len));
    }
    let len = usize::try_from(len).map_err(|_| FrameError::TooLong(len))?;
    let mut key = [0u8; 4];
    if masked {
        let Some(k) = buf.get(pos..pos + 4) else {
            return Ok(None);
        };
        key.copy_from_slice(k);
        pos += 4;
    }
    let Some(data) = buf.get(pos..pos + len) else {
        return Ok(None);
    };
    let mut payload = data.to_vec();
    if masked {
        apply_mask(&mut payload, key);
    }
    Ok(Some((
        Frame {
            fin,
            opcode,
            payload,
        },
        pos + len,
    )))
}

/// XORs `data` with the 4-byte mask key.
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Appends one frame to `out`; masks the payload when `mask` is given.
pub fn encode(out: &mut Vec<u8>, fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    out.push(if fin { 0x80 } else { 0 } | (opcode & 0x0f));
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if let Some(l) = u8::try_from(len).ok().filter(|l| *l < 126) {
        out.push(mbit | l);
    } else if let Ok(l) = u16::try_from(len) {
        out.push(mbit | 126);
        out.extend_from_slice(&l.to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            let start = out.len();
            out.extend_from_slice(payload);
            apply_mask(&mut out[start..], key);
        }
        None => out.extend_from_slice(payload),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn masked_frames_round_trip_at_every_length_class() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let mut out = Vec::new();
            encode(&mut out, true, OP_BINARY, &payload, Some([1, 2, 3, 4]));
            let (f, used) = parse(&out, 1 << 20, true).unwrap().unwrap();
            assert_eq!(used, out.len());
            assert_eq!(f.payload, payload);
            assert!(
                parse(&out[..out.len() - 1], 1 << 20, true)
                    .unwrap()
                    .is_none()
                    || len == 0
            );
        }
    }

    #[test]
    fn unmasked_client_frame_is_refused() {
        let mut out = Vec::new();
        encode(&mut out, true, OP_TEXT, b"hi", None);
        assert_eq!(parse(&out, 100, true), Err(FrameError::Mask));
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let buf = [0x82, 0xff, 0, 0, 0, 1, 0, 0, 0, 0];
        assert!(matches!(
            parse(&buf, 1024, true),
            Err(FrameError::TooLong(_))
        ));
    }

    #[test]
    fn parser_never_panics_on_random_input() {
        let mut rng = crate::testutil::Rng::new(7);
        for _ in 0..20000 {
            let buf = rng.bytes(64);
            for masked in [true, false] {
                let _ = parse(&buf, 1 << 16, masked);
            }
        }
        // Mutations of valid frames.
        for _ in 0..20000 {
            let mut out = Vec::new();
            let payload = rng.bytes(300);
            encode(
                &mut out,
                rng.next().is_multiple_of(2),
                (rng.next() % 16) as u8,
                &payload,
                Some([9, 8, 7, 6]),
            );
            let i = (rng.next() as usize) % out.len();
            out[i] ^= rng.next() as u8;
            let cut = (rng.next() as usize) % (out.len() + 1);
            let _ = parse(&out[..cut], 1 << 16, true);
        }
    }
}
