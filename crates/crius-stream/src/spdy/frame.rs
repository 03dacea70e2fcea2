//! SPDY/3 frame codec. Header blocks stay compressed here; see
//! [`super::header`] for the per-session zlib contexts. The parser takes
//! untrusted bytes and never panics.

/// SPDY version carried in control frames.
pub const VERSION: u16 = 3;
/// FIN flag (data and control frames).
pub const FLAG_FIN: u8 = 0x01;
/// UNIDIRECTIONAL flag of SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SETTINGS id of the initial stream window.
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;
/// RST_STREAM status: protocol error.
pub const RST_PROTOCOL_ERROR: u32 = 1;
/// RST_STREAM status: invalid stream.
pub const RST_INVALID_STREAM: u32 = 2;
/// RST_STREAM status: refused stream.
pub const RST_REFUSED_STREAM: u32 = 3;
/// RST_STREAM status: cancel.
pub const RST_CANCEL: u32 = 5;
/// RST_STREAM status: flow control error.
pub const RST_FLOW_CONTROL_ERROR: u32 = 7;

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Largest payload a frame can declare (24-bit length).
pub const MAX_FRAME_LEN: usize = (1 << 24) - 1;

/// One SPDY frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA.
    Data {
        /// Stream.
        stream_id: u32,
        /// Last frame from the sender on this stream.
        fin: bool,
        /// Payload.
        data: Vec<u8>,
    },
    /// SYN_STREAM: the peer opens a stream.
    SynStream {
        /// New stream id.
        stream_id: u32,
        /// Associated stream id (0 for none).
        associated_to: u32,
        /// Priority 0 (highest) to 7.
        priority: u8,
        /// FIN and UNIDIRECTIONAL flags.
        flags: u8,
        /// Compressed header block.
        header_block: Vec<u8>,
    },
    /// SYN_REPLY: accepts a stream.
    SynReply {
        /// Stream.
        stream_id: u32,
        /// FIN flag.
        fin: bool,
        /// Compressed header block.
        header_block: Vec<u8>,
    },
    /// RST_STREAM.
    RstStream {
        /// Stream.
        stream_id: u32,
        /// Status code.
        status: u32,
    },
    /// SETTINGS: (flags, id, value) entries.
    Settings {
        /// Entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// PING.
    Ping {
        /// Ping id.
        id: u32,
    },
    /// GOAWAY.
    GoAway {
        /// Last stream the sender processed.
        last_good_stream_id: u32,
        /// Status code.
        status: u32,
    },
    /// HEADERS.
    Headers {
        /// Stream.
        stream_id: u32,
        /// FIN flag.
        fin: bool,
        /// Compressed header block.
        header_block: Vec<u8>,
    },
    /// WINDOW_UPDATE.
    WindowUpdate {
        /// Stream (0: the session).
        stream_id: u32,
        /// Bytes added to the window.
        delta: u32,
    },
    /// A control frame of a type we do not know; ignored.
    Unknown {
        /// Its type.
        frame_type: u16,
    },
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A control frame of another SPDY version.
    #[error("spdy control frame has unsupported version {0}")]
    Version(u16),
    /// A frame longer than the configured limit.
    #[error("spdy frame of {0} bytes is over the limit")]
    TooLong(usize),
    /// A control frame whose payload is too short for its type.
    #[error("spdy control frame of type {0} is malformed")]
    Malformed(u16),
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses one frame from the front of `buf`. `Ok(None)` means more bytes
/// are needed; otherwise the frame and the bytes used.
pub fn parse(buf: &[u8], max_len: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let (Some(w0), Some(w1)) = (be32(buf, 0), be32(buf, 4)) else {
        return Ok(None);
    };
    let flags = (w1 >> 24) as u8;
    let len = (w1 & 0x00ff_ffff) as usize;
    if len > max_len {
        return Err(FrameError::TooLong(len));
    }
    let Some(p) = buf.get(8..8 + len) else {
        return Ok(None);
    };
    let used = 8 + len;
    if w0 & 0x8000_0000 == 0 {
        let frame = Frame::Data {
            stream_id: w0 & 0x7fff_ffff,
            fin: flags & FLAG_FIN != 0,
            data: p.to_vec(),
        };
        return Ok(Some((frame, used)));
    }
    let version = ((w0 >> 16) & 0x7fff) as u16;
    let frame_type = (w0 & 0xffff) as u16;
    if version != VERSION {
        return Err(FrameError::Version(version));
    }
    let frame = parse_control(frame_type, flags, p)?;
    Ok(Some((frame, used)))
}

/// Decodes the payload `p` of a control frame of `frame_type`.
fn parse_control(frame_type: u16, flags: u8, p: &[u8]) -> Result<Frame, FrameError> {
    let bad = FrameError::Malformed(frame_type);
    let id = |at: usize| be32(p, at).map(|v| v & 0x7fff_ffff).ok_or(bad.clone());
    let frame = match frame_type {
        TYPE_SYN_STREAM => {
            let priority = p.get(8).ok_or(bad.clone())? >> 5;
            Frame::SynStream {
                stream_id: id(0)?,
                associated_to: id(4)?,
                priority,
                flags,
                header_block: p.get(10..).ok_or(bad.clone())?.to_vec(),
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            let stream_id = id(0)?;
            let header_block = p.get(4..).ok_or(bad.clone())?.to_vec();
            let fin = flags & FLAG_FIN != 0;
            if frame_type == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    fin,
                    header_block,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    fin,
                    header_block,
                }
            }
        }
        TYPE_RST_STREAM => Frame::RstStream {
            stream_id: id(0)?,
            status: be32(p, 4).ok_or(bad.clone())?,
        },
        TYPE_SETTINGS => {
            let n = be32(p, 0).ok_or(bad.clone())? as usize;
            if n > (p.len() - 4) / 8 {
                return Err(bad);
            }
            let mut entries = Vec::with_capacity(n);
            for i in 0..n {
                let at = 4 + i * 8;
                let fi = be32(p, at).ok_or(bad.clone())?;
                entries.push((
                    (fi >> 24) as u8,
                    fi & 0x00ff_ffff,
                    be32(p, at + 4).ok_or(bad.clone())?,
                ));
            }
            Frame::Settings { entries }
        }
        TYPE_PING => Frame::Ping {
            id: be32(p, 0).ok_or(bad.clone())?,
        },
        TYPE_GOAWAY => Frame::GoAway {
            last_good_stream_id: id(0)?,
            status: be32(p, 4).unwrap_or(0),
        },
        TYPE_WINDOW_UPDATE => Frame::WindowUpdate {
            stream_id: id(0)?,
            delta: id(4)?,
        },
        other => Frame::Unknown { frame_type: other },
    };
    Ok(frame)
}

fn control(out: &mut Vec<u8>, frame_type: u16, flags: u8, payload: &[u8]) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&frame_type.to_be_bytes());
    push_flags_len(out, flags, payload.len());
    out.extend_from_slice(payload);
}

fn push_flags_len(out: &mut Vec<u8>, flags: u8, len: usize) {
    let len = u32::try_from(len.min(MAX_FRAME_LEN)).unwrap_or(0);
    out.extend_from_slice(&((u32::from(flags) << 24) | len).to_be_bytes());
}

/// Appends the wire form of `frame` to `out`. Payloads longer than
/// [`MAX_FRAME_LEN`] must be split by the caller.
pub fn encode(out: &mut Vec<u8>, frame: &Frame) {
    let mut p = Vec::new();
    match frame {
        Frame::Data {
            stream_id,
            fin,
            data,
        } => {
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            push_flags_len(out, if *fin { FLAG_FIN } else { 0 }, data.len());
            out.extend_from_slice(data);
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            flags,
            header_block,
        } => {
            p.extend_from_slice(&stream_id.to_be_bytes());
            p.extend_from_slice(&associated_to.to_be_bytes());
            p.push((priority & 7) << 5);
            p.push(0);
            p.extend_from_slice(header_block);
            control(out, TYPE_SYN_STREAM, *flags, &p);
        }
        Frame::SynReply {
            stream_id,
            fin,
            header_block,
        }
        | Frame::Headers {
            stream_id,
            fin,
            header_block,
        } => {
            p.extend_from_slice(&stream_id.to_be_bytes());
            p.extend_from_slice(header_block);
            let t = if matches!(frame, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            control(out, t, if *fin { FLAG_FIN } else { 0 }, &p);
        }
        Frame::RstStream { stream_id, status } => {
            p.extend_from_slice(&stream_id.to_be_bytes());
            p.extend_from_slice(&status.to_be_bytes());
            control(out, TYPE_RST_STREAM, 0, &p);
        }
        Frame::Settings { entries } => {
            p.extend_from_slice(&u32::try_from(entries.len()).unwrap_or(0).to_be_bytes());
            for (flags, id, value) in entries {
                p.extend_from_slice(
                    &((u32::from(*flags) << 24) | (id & 0x00ff_ffff)).to_be_bytes(),
                );
                p.extend_from_slice(&value.to_be_bytes());
            }
            control(out, TYPE_SETTINGS, 0, &p);
        }
        Frame::Ping { id } => control(out, TYPE_PING, 0, &id.to_be_bytes()),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            p.extend_from_slice(&last_good_stream_id.to_be_bytes());
            p.extend_from_slice(&status.to_be_bytes());
            control(out, TYPE_GOAWAY, 0, &p);
        }
        Frame::WindowUpdate { stream_id, delta } => {
            p.extend_from_slice(&stream_id.to_be_bytes());
            p.extend_from_slice(&delta.to_be_bytes());
            control(out, TYPE_WINDOW_UPDATE, 0, &p);
        }
        Frame::Unknown { frame_type } => control(out, *frame_type, 0, &[]),
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn samples() -> Vec<Frame> {
        vec![
            Frame::Data {
                stream_id: 5,
                fin: true,
                data: b"abc".to_vec(),
            },
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: FLAG_FIN,
                header_block: vec![1, 2, 3],
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                header_block: vec![9],
            },
            Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            Frame::Settings {
                entries: vec![(0, SETTINGS_INITIAL_WINDOW_SIZE, 65536)],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 0,
            },
            Frame::Headers {
                stream_id: 1,
                fin: true,
                header_block: vec![],
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 100,
            },
        ]
    }

    #[test]
    fn every_frame_type_round_trips() {
        for f in samples() {
            let mut out = Vec::new();
            encode(&mut out, &f);
            let (g, used) = parse(&out, MAX_FRAME_LEN).unwrap().unwrap();
            assert_eq!(used, out.len());
            assert_eq!(g, f);
            assert_eq!(parse(&out[..out.len() - 1], MAX_FRAME_LEN).unwrap(), None);
        }
    }

    #[test]
    fn wrong_version_and_oversize_are_errors() {
        let mut out = Vec::new();
        encode(&mut out, &Frame::Ping { id: 1 });
        out[1] = 2;
        assert_eq!(parse(&out, 100), Err(FrameError::Version(2)));
        let big = [0, 0, 0, 1, 0, 0x10, 0, 0];
        assert_eq!(parse(&big, 1024), Err(FrameError::TooLong(0x100000)));
    }

    #[test]
    fn parser_never_panics_on_random_or_mutated_input() {
        let mut rng = crate::testutil::Rng::new(11);
        for _ in 0..30000 {
            let mut buf = rng.bytes(48);
            if buf.len() > 2 && rng.next().is_multiple_of(2) {
                buf[0] = 0x80;
                buf[1] = 3;
            }
            let _ = parse(&buf, 1 << 16);
        }
        let s = samples();
        for _ in 0..30000 {
            let mut out = Vec::new();
            encode(&mut out, &s[(rng.next() as usize) % s.len()]);
            let i = (rng.next() as usize) % out.len();
            out[i] ^= rng.next() as u8;
            let cut = (rng.next() as usize) % (out.len() + 1);
            let _ = parse(&out[..cut], 1 << 16);
        }
    }
}
