//! A minimal, blocking D-Bus client: just enough of the wire protocol to call systemd's
//! manager (StartTransientUnit, SetUnitProperties, KillUnit, StopUnit, GetUnit,
//! ResetFailedUnit, Properties.Get), with the types their arguments and replies use
//! (unit properties are `a(sv)`; `DeviceAllow` among them is an `a(ss)`).
//!
//! Written here rather than taken from a crate because the monitor is single-threaded and
//! async-free, and the subset needed is small: SASL `EXTERNAL` authentication, method
//! calls, their replies and errors (other messages, such as signals, are skipped).
//! Marshalling follows the D-Bus specification's wire format: values aligned to their
//! natural size (structs and dict entries to 8), arrays prefixed by their byte length
//! counted after the padding to the element's alignment, strings NUL-terminated.
//! Messages are written little-endian; replies in either byte order are read.
//!
//! Two transports: a message bus (the system bus socket) needs `Hello` first and a
//! destination on every call; systemd's private socket (`/run/systemd/private`) is a
//! peer-to-peer connection straight to the manager, where neither exists.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest message accepted (the specification's limit is 128 MiB; systemd's replies to
/// the calls made here are tiny).
const MAX_MESSAGE: usize = 16 << 20;

/// Message types (header byte 1).
const METHOD_CALL: u8 = 1;
const METHOD_RETURN: u8 = 2;
const ERROR: u8 = 3;

/// Header field codes.
const FIELD_PATH: u8 = 1;
const FIELD_INTERFACE: u8 = 2;
const FIELD_MEMBER: u8 = 3;
const FIELD_ERROR_NAME: u8 = 4;
const FIELD_REPLY_SERIAL: u8 = 5;
const FIELD_DESTINATION: u8 = 6;
const FIELD_SIGNATURE: u8 = 8;

/// An error talking D-Bus.
#[derive(Debug, thiserror::Error)]
pub enum DbusError {
    /// The socket could not be connected (no manager listening there).
    #[error("connect to {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The peer did not answer in time.
    #[error("{path}: no answer to {what} within {timeout:?} (is the manager hung?)")]
    Timeout {
        /// The socket path.
        path: PathBuf,
        /// What was waited for.
        what: String,
        /// The limit.
        timeout: Duration,
    },
    /// Reading or writing the socket failed.
    #[error("{path}: {what}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The peer refused the SASL handshake.
    #[error("{path}: authentication refused: {answer}")]
    Auth {
        /// The socket path.
        path: PathBuf,
        /// The peer's answer.
        answer: String,
    },
    /// A message broke the wire format.
    #[error("malformed D-Bus message: {0}")]
    Malformed(String),
    /// The peer answered with an error.
    #[error("{member}: {name}: {message}")]
    Remote {
        /// The method called.
        member: String,
        /// The D-Bus error name (`org.freedesktop.systemd1.NoSuchUnit`).
        name: String,
        /// The error's message.
        message: String,
    },
}

impl DbusError {
    /// The D-Bus error name when the peer answered with an error.
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            DbusError::Remote { name, .. } => Some(name),
            _ => None,
        }
    }
}

/// A D-Bus value, for the types systemd's manager calls use.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `y`
    Byte(u8),
    /// `b`
    Bool(bool),
    /// `n`
    Int16(i16),
    /// `q`
    Uint16(u16),
    /// `i`
    Int32(i32),
    /// `u`
    Uint32(u32),
    /// `x`
    Int64(i64),
    /// `t`
    Uint64(u64),
    /// `d`
    Double(f64),
    /// `s`
    Str(String),
    /// `o`
    ObjectPath(String),
    /// `g`
    Signature(String),
    /// `a<elem>`: the element signature is kept so an empty array still has a type.
    Array(String, Vec<Value>),
    /// `(...)`; also a dict entry `{..}` when decoded.
    Struct(Vec<Value>),
    /// `v`
    Variant(Box<Value>),
}

impl Value {
    /// The value's type signature.
    pub fn signature(&self) -> String {
        match self {
            Value::Byte(_) => "y".into(),
            Value::Bool(_) => "b".into(),
            Value::Int16(_) => "n".into(),
            Value::Uint16(_) => "q".into(),
            Value::Int32(_) => "i".into(),
            Value::Uint32(_) => "u".into(),
            Value::Int64(_) => "x".into(),
            Value::Uint64(_) => "t".into(),
            Value::Double(_) => "d".into(),
            Value::Str(_) => "s".into(),
            Value::ObjectPath(_) => "o".into(),
            Value::Signature(_) => "g".into(),
            Value::Array(elem, _) => format!("a{elem}"),
            Value::Struct(fields) => {
                let inner: String = fields.iter().map(Value::signature).collect();
                format!("({inner})")
            }
            Value::Variant(_) => "v".into(),
        }
    }

    /// The string inside `s`, `o` or `g` (through a variant).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::ObjectPath(s) | Value::Signature(s) => Some(s),
            Value::Variant(v) => v.as_str(),
            _ => None,
        }
    }

    /// The number inside an unsigned or signed integer (through a variant).
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Byte(n) => Some(u64::from(*n)),
            Value::Uint16(n) => Some(u64::from(*n)),
            Value::Uint32(n) => Some(u64::from(*n)),
            Value::Uint64(n) => Some(*n),
            Value::Int16(n) => u64::try_from(*n).ok(),
            Value::Int32(n) => u64::try_from(*n).ok(),
            Value::Int64(n) => u64::try_from(*n).ok(),
            Value::Variant(v) => v.as_u64(),
            _ => None,
        }
    }

    /// The bytes of an `ay` (through a variant), such as a NUL-terminated path.
    pub fn as_bytes(&self) -> Option<Vec<u8>> {
        match self {
            Value::Array(elem, items) if elem == "y" => items
                .iter()
                .map(|v| match v {
                    Value::Byte(b) => Some(*b),
                    _ => None,
                })
                .collect(),
            Value::Variant(v) => v.as_bytes(),
            _ => None,
        }
    }

    /// A struct `(sv)`: a property name and its value, as StartTransientUnit takes them.
    pub fn property(name: &str, value: Value) -> Value {
        Value::Struct(vec![
            Value::Str(name.into()),
            Value::Variant(Box::new(value)),
        ])
    }
}

/// The alignment of the type whose signature starts with `code`.
fn alignment(code: u8) -> usize {
    match code {
        b'y' | b'g' | b'v' => 1,
        b'n' | b'q' => 2,
        b'b' | b'i' | b'u' | b's' | b'o' | b'a' | b'h' => 4,
        _ => 8, // x t d ( {
    }
}

/// Marshals values into a message buffer (little-endian). Offsets count from the start
/// of the message, as alignment does: the header and the body are both written with one.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn pad(&mut self, align: usize) {
        while !self.buf.len().is_multiple_of(align) {
            self.buf.push(0);
        }
    }

    fn u32(&mut self, n: u32) {
        self.pad(4);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    fn string(&mut self, s: &str) -> Result<(), DbusError> {
        let len = u32::try_from(s.len())
            .map_err(|_| DbusError::Malformed(format!("string of {} bytes", s.len())))?;
        self.u32(len);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    fn signature(&mut self, s: &str) -> Result<(), DbusError> {
        let len = u8::try_from(s.len())
            .map_err(|_| DbusError::Malformed(format!("signature {s:?} is too long")))?;
        self.buf.push(len);
        self.buf.extend_from_slice(s.as_bytes());
        self.buf.push(0);
        Ok(())
    }

    pub(crate) fn value(&mut self, v: &Value) -> Result<(), DbusError> {
        match v {
            Value::Byte(b) => self.buf.push(*b),
            Value::Bool(b) => self.u32(u32::from(*b)),
            Value::Int16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Uint16(n) => {
                self.pad(2);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Int32(n) => {
                self.pad(4);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Uint32(n) => self.u32(*n),
            Value::Int64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Uint64(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Double(n) => {
                self.pad(8);
                self.buf.extend_from_slice(&n.to_le_bytes());
            }
            Value::Str(s) | Value::ObjectPath(s) => self.string(s)?,
            Value::Signature(s) => self.signature(s)?,
            Value::Array(elem, items) => {
                let first = elem
                    .bytes()
                    .next()
                    .ok_or_else(|| DbusError::Malformed("array without an element type".into()))?;
                self.u32(0);
                let len_at = self.buf.len() - 4;
                // The length excludes the padding before the first element, which is
                // present even when the array is empty.
                self.pad(alignment(first));
                let start = self.buf.len();
                for item in items {
                    if item.signature() != *elem {
                        return Err(DbusError::Malformed(format!(
                            "array of {elem} holds a {}",
                            item.signature()
                        )));
                    }
                    self.value(item)?;
                }
                let len = u32::try_from(self.buf.len() - start)
                    .map_err(|_| DbusError::Malformed("array longer than 4 GiB".into()))?;
                self.buf[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
            }
            Value::Struct(fields) => {
                self.pad(8);
                for f in fields {
                    self.value(f)?;
                }
            }
            Value::Variant(inner) => {
                self.signature(&inner.signature())?;
                self.value(inner)?;
            }
        }
        Ok(())
    }
}

/// Reads values out of a received message.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], big_endian: bool) -> Self {
        Self {
            buf,
            pos: 0,
            big_endian,
        }
    }

    fn align(&mut self, align: usize) -> Result<(), DbusError> {
        let next = self.pos.div_ceil(align) * align;
        if next > self.buf.len() {
            return Err(DbusError::Malformed("padding past the end".into()));
        }
        self.pos = next;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DbusError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| DbusError::Malformed(format!("{n} bytes past the end")))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DbusError> {
        self.align(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        if self.big_endian {
            out.reverse();
        }
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, DbusError> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }

    fn text(&mut self, len: usize) -> Result<String, DbusError> {
        let bytes = self.take(len)?;
        if self.take(1)? != [0] {
            return Err(DbusError::Malformed("string without its NUL".into()));
        }
        String::from_utf8(bytes.to_vec())
            .map_err(|_| DbusError::Malformed("string is not UTF-8".into()))
    }

    fn signature(&mut self) -> Result<String, DbusError> {
        let len = usize::from(self.take(1)?[0]);
        self.text(len)
    }

    /// Decodes one value of the single complete type `sig`.
    pub(crate) fn value(&mut self, sig: &str, depth: usize) -> Result<Value, DbusError> {
        if depth > 32 {
            return Err(DbusError::Malformed("values nested too deeply".into()));
        }
        let first = *sig
            .as_bytes()
            .first()
            .ok_or_else(|| DbusError::Malformed("empty signature".into()))?;
        Ok(match first {
            b'y' => Value::Byte(self.take(1)?[0]),
            b'b' => Value::Bool(self.u32()? != 0),
            b'n' => Value::Int16(i16::from_le_bytes(self.fixed()?)),
            b'q' => Value::Uint16(u16::from_le_bytes(self.fixed()?)),
            b'i' => Value::Int32(i32::from_le_bytes(self.fixed()?)),
            b'u' | b'h' => Value::Uint32(self.u32()?),
            b'x' => Value::Int64(i64::from_le_bytes(self.fixed()?)),
            b't' => Value::Uint64(u64::from_le_bytes(self.fixed()?)),
            b'd' => Value::Double(f64::from_le_bytes(self.fixed()?)),
            b's' | b'o' => {
                let len = self.u32()? as usize;
                let text = self.text(len)?;
                if first == b's' {
                    Value::Str(text)
                } else {
                    Value::ObjectPath(text)
                }
            }
            b'g' => Value::Signature(self.signature()?),
            b'v' => {
                let inner = self.signature()?;
                if single_types(&inner)?.len() != 1 {
                    return Err(DbusError::Malformed(format!(
                        "variant signature {inner:?} is not one type"
                    )));
                }
                Value::Variant(Box::new(self.value(&inner, depth + 1)?))
            }
            b'a' => {
                let elem = &sig[1..];
                let len = self.u32()? as usize;
                self.align(alignment(*elem.as_bytes().first().unwrap_or(&b'y')))?;
                let end = self
                    .pos
                    .checked_add(len)
                    .filter(|e| *e <= self.buf.len())
                    .ok_or_else(|| DbusError::Malformed("array past the end".into()))?;
                let mut items = Vec::new();
                while self.pos < end {
                    items.push(self.value(elem, depth + 1)?);
                }
                if self.pos != end {
                    return Err(DbusError::Malformed("array length mismatch".into()));
                }
                Value::Array(elem.to_string(), items)
            }
            b'(' | b'{' => {
                self.align(8)?;
                let inner = &sig[1..sig.len() - 1];
                let mut fields = Vec::new();
                for t in single_types(inner)? {
                    fields.push(self.value(t, depth + 1)?);
                }
                Value::Struct(fields)
            }
            other => {
                return Err(DbusError::Malformed(format!(
                    "unsupported type {:?}",
                    char::from(other)
                )))
            }
        })
    }
}

/// Splits a signature into its single complete types (`sa(sv)` → `s`, `a(sv)`).
pub(crate) fn single_types(sig: &str) -> Result<Vec<&str>, DbusError> {
    let bytes = sig.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let end = type_end(bytes, i)?;
        out.push(&sig[i..end]);
        i = end;
    }
    Ok(out)
}

/// The end (exclusive) of the single complete type starting at `i`.
fn type_end(sig: &[u8], i: usize) -> Result<usize, DbusError> {
    let bad = || DbusError::Malformed(format!("bad signature {:?}", String::from_utf8_lossy(sig)));
    match sig.get(i).ok_or_else(bad)? {
        b'a' => type_end(sig, i + 1),
        open @ (b'(' | b'{') => {
            let close = if *open == b'(' { b')' } else { b'}' };
            let mut j = i + 1;
            while *sig.get(j).ok_or_else(bad)? != close {
                j = type_end(sig, j)?;
            }
            if j == i + 1 {
                return Err(bad());
            }
            Ok(j + 1)
        }
        b'y' | b'b' | b'n' | b'q' | b'i' | b'u' | b'x' | b't' | b'd' | b's' | b'o' | b'g'
        | b'v' | b'h' => Ok(i + 1),
        _ => Err(bad()),
    }
}

/// How the socket is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A message bus: `Hello` first, and every call names its destination.
    Bus,
    /// A peer-to-peer connection straight to the service (systemd's private socket).
    Peer,
}

impl Transport {
    /// systemd's private sockets (`/run/systemd/private`, a user manager's
    /// `$XDG_RUNTIME_DIR/systemd/private`) are peer-to-peer; anything else is taken to be
    /// a message bus.
    pub fn for_path(path: &Path) -> Self {
        let private = path.file_name().is_some_and(|n| n == "private")
            && path
                .parent()
                .and_then(Path::file_name)
                .is_some_and(|n| n == "systemd");
        if private {
            Transport::Peer
        } else {
            Transport::Bus
        }
    }
}

/// A received method return or error.
#[derive(Debug)]
struct Reply {
    error_name: Option<String>,
    body: Vec<Value>,
}

/// An authenticated connection. Calls are synchronous: one call, then its reply.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    path: PathBuf,
    transport: Transport,
    timeout: Duration,
    serial: u32,
}

impl Connection {
    /// Connects to `path`, authenticates as this process's uid and, on a message bus,
    /// says `Hello`. Every read and write is bounded by `timeout`.
    pub fn open(path: &Path, transport: Transport, timeout: Duration) -> Result<Self, DbusError> {
        let stream = UnixStream::connect(path).map_err(|source| DbusError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
        let io = |what: &str, source| DbusError::Io {
            path: path.to_path_buf(),
            what: what.into(),
            source,
        };
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| io("set timeouts", e))?;
        let mut conn = Self {
            stream,
            path: path.to_path_buf(),
            transport,
            timeout,
            serial: 0,
        };
        conn.authenticate()?;
        if transport == Transport::Bus {
            conn.call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "Hello",
                &[],
            )?;
        }
        Ok(conn)
    }

    /// The socket this connection talks to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, what: &str, source: std::io::Error) -> DbusError {
        if matches!(
            source.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            return DbusError::Timeout {
                path: self.path.clone(),
                what: what.into(),
                timeout: self.timeout,
            };
        }
        DbusError::Io {
            path: self.path.clone(),
            what: what.into(),
            source,
        }
    }

    /// SASL: a NUL byte, `AUTH EXTERNAL <uid as hex-encoded ASCII>`, `BEGIN`, then the
    /// server's `OK <guid>`. `BEGIN` goes in the same write as `AUTH` (pipelined, as the
    /// specification allows and sd-bus clients do): sd-bus servers, systemd's private
    /// socket among them, do not look at bytes that arrived in the same read as `BEGIN`
    /// until the socket becomes readable again, so a first call sent right behind a
    /// separate `BEGIN` could wait forever.
    fn authenticate(&mut self) -> Result<(), DbusError> {
        let uid = nix::unistd::geteuid().as_raw().to_string();
        let hex: String = uid.bytes().map(|b| format!("{b:02x}")).collect();
        let hello = format!("\0AUTH EXTERNAL {hex}\r\nBEGIN\r\n");
        self.stream
            .write_all(hello.as_bytes())
            .map_err(|e| self.io_error("AUTH", e))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") {
            if line.len() > 512 {
                return Err(DbusError::Auth {
                    path: self.path.clone(),
                    answer: "answer line too long".into(),
                });
            }
            match self.stream.read(&mut byte) {
                Ok(0) => {
                    return Err(DbusError::Auth {
                        path: self.path.clone(),
                        answer: "connection closed".into(),
                    })
                }
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error("AUTH answer", e)),
            }
        }
        let answer = String::from_utf8_lossy(&line).trim().to_string();
        if !answer.starts_with("OK ") {
            return Err(DbusError::Auth {
                path: self.path.clone(),
                answer,
            });
        }
        Ok(())
    }

    /// Calls `interface.member` on object `path` with `args`, returning the reply's body
    /// or the peer's error. `destination` is dropped on a peer-to-peer connection.
    pub fn call(
        &mut self,
        destination: &str,
        path: &str,
        interface: &str,
        member: &str,
        args: &[Value],
    ) -> Result<Vec<Value>, DbusError> {
        self.serial = self.serial.wrapping_add(1).max(1);
        let serial = self.serial;
        let destination = (self.transport == Transport::Bus).then_some(destination);
        let message = method_call(serial, destination, path, interface, member, args)?;
        self.stream
            .write_all(&message)
            .map_err(|e| self.io_error(member, e))?;
        loop {
            let (reply_to, reply) = self.receive(member)?;
            if reply_to != Some(serial) {
                continue; // a signal or a reply to someone else: not ours
            }
            return match reply.error_name {
                None => Ok(reply.body),
                Some(name) => Err(DbusError::Remote {
                    member: member.into(),
                    name,
                    message: reply
                        .body
                        .first()
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                }),
            };
        }
    }

    fn read_exact(&mut self, buf: &mut [u8], what: &str) -> Result<(), DbusError> {
        self.stream
            .read_exact(buf)
            .map_err(|e| self.io_error(what, e))
    }

    /// Reads one message; returns its reply serial (for returns and errors) and contents.
    fn receive(&mut self, member: &str) -> Result<(Option<u32>, Reply), DbusError> {
        let mut fixed = [0u8; 16];
        self.read_exact(&mut fixed, member)?;
        let big_endian = match fixed[0] {
            b'l' => false,
            b'B' => true,
            other => return Err(DbusError::Malformed(format!("byte order mark {other:#x}"))),
        };
        let word = |at: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&fixed[at..at + 4]);
            if big_endian {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        };
        let body_len = word(4) as usize;
        let fields_len = word(12) as usize;
        let header_len = (16 + fields_len).div_ceil(8) * 8;
        if header_len + body_len > MAX_MESSAGE {
            return Err(DbusError::Malformed(format!(
                "message of {} bytes",
                header_len + body_len
            )));
        }
        let mut message = vec![0u8; header_len + body_len];
        message[..16].copy_from_slice(&fixed);
        let rest = &mut message[16..];
        self.stream
            .read_exact(rest)
            .map_err(|e| self.io_error(member, e))?;
        let kind = message[1];
        let mut r = Reader::new(&message, big_endian);
        r.pos = 12;
        let fields = r.value("a(yv)", 0)?;
        let mut reply = Reply {
            error_name: None,
            body: Vec::new(),
        };
        let mut reply_serial = None;
        let mut signature = String::new();
        if let Value::Array(_, fields) = fields {
            for f in fields {
                let Value::Struct(f) = f else { continue };
                match (f.first(), f.get(1)) {
                    (Some(Value::Byte(FIELD_ERROR_NAME)), Some(v)) => {
                        reply.error_name = v.as_str().map(str::to_string);
                    }
                    (Some(Value::Byte(FIELD_REPLY_SERIAL)), Some(v)) => {
                        reply_serial = v.as_u64().and_then(|n| u32::try_from(n).ok());
                    }
                    (Some(Value::Byte(FIELD_SIGNATURE)), Some(v)) => {
                        signature = v.as_str().unwrap_or_default().to_string();
                    }
                    _ => {}
                }
            }
        }
        if kind != METHOD_RETURN && kind != ERROR {
            return Ok((None, reply));
        }
        r.pos = header_len;
        for t in single_types(&signature)? {
            reply.body.push(r.value(t, 0)?);
        }
        Ok((reply_serial, reply))
    }
}

/// A complete method call message.
fn method_call(
    serial: u32,
    destination: Option<&str>,
    path: &str,
    interface: &str,
    member: &str,
    args: &[Value],
) -> Result<Vec<u8>, DbusError> {
    let mut body = Writer::default();
    for a in args {
        body.value(a)?;
    }
    let body = body.into_bytes();
    let signature: String = args.iter().map(Value::signature).collect();
    let field =
        |code: u8, v: Value| Value::Struct(vec![Value::Byte(code), Value::Variant(Box::new(v))]);
    let mut fields = vec![
        field(FIELD_PATH, Value::ObjectPath(path.into())),
        field(FIELD_INTERFACE, Value::Str(interface.into())),
        field(FIELD_MEMBER, Value::Str(member.into())),
    ];
    if let Some(d) = destination {
        fields.push(field(FIELD_DESTINATION, Value::Str(d.into())));
    }
    if !signature.is_empty() {
        fields.push(field(FIELD_SIGNATURE, Value::Signature(signature)));
    }
    let body_len = u32::try_from(body.len())
        .map_err(|_| DbusError::Malformed("body longer than 4 GiB".into()))?;
    let mut w = Writer::default();
    w.buf.extend_from_slice(&[b'l', METHOD_CALL, 0, 1]);
    w.u32(body_len);
    w.u32(serial);
    w.value(&Value::Array("(yv)".into(), fields))?;
    w.pad(8);
    w.buf.extend_from_slice(&body);
    Ok(w.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(values: &[Value]) -> Vec<u8> {
        let mut w = Writer::default();
        for v in values {
            w.value(v).unwrap();
        }
        w.into_bytes()
    }

    fn decode(bytes: &[u8], sig: &str) -> Vec<Value> {
        let mut r = Reader::new(bytes, false);
        let out = single_types(sig)
            .unwrap()
            .into_iter()
            .map(|t| r.value(t, 0).unwrap())
            .collect();
        assert_eq!(r.pos, bytes.len(), "every byte consumed");
        out
    }

    #[test]
    fn basic_values_are_aligned_to_their_size() {
        let bytes = encode(&[Value::Byte(7), Value::Uint64(1), Value::Str("ab".into())]);
        assert_eq!(
            bytes,
            [
                7, 0, 0, 0, 0, 0, 0, 0, // y, then padding to 8
                1, 0, 0, 0, 0, 0, 0, 0, // t
                2, 0, 0, 0, b'a', b'b', 0 // s: length, bytes, NUL
            ]
        );
    }

    #[test]
    fn an_array_of_structs_counts_its_length_after_the_padding() {
        let props = Value::Array(
            "(sv)".into(),
            vec![Value::property("Delegate", Value::Bool(true))],
        );
        let bytes = encode(&[Value::Byte(1), props.clone()]);
        // y at 0, array length at 4, padding to 8, struct at 8: "Delegate" (4 + 8 + 1)
        // ends at 21, variant signature "b" at 21..24, bool aligned to 24..28.
        assert_eq!(&bytes[4..8], &20u32.to_le_bytes());
        assert_eq!(&bytes[8..12], &8u32.to_le_bytes());
        assert_eq!(&bytes[21..24], &[1, b'b', 0]);
        assert_eq!(&bytes[24..28], &1u32.to_le_bytes());
        assert_eq!(bytes.len(), 28);
        assert_eq!(decode(&bytes, "ya(sv)"), vec![Value::Byte(1), props]);
    }

    #[test]
    fn an_empty_array_still_pads_to_its_element_alignment() {
        let empty = Value::Array("(sa(sv))".into(), Vec::new());
        let bytes = encode(&[Value::Uint32(5), empty.clone()]);
        // u32 at 0, length 0 at 4, padding up to 8 (none needed here) and nothing else.
        assert_eq!(bytes, [5, 0, 0, 0, 0, 0, 0, 0]);
        let bytes = encode(&[Value::Byte(1), empty.clone()]);
        assert_eq!(bytes, [1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode(&bytes, "ya(sa(sv))"), vec![Value::Byte(1), empty]);
    }

    #[test]
    fn variants_carry_their_signature_and_round_trip() {
        let values = vec![
            Value::Variant(Box::new(Value::Array(
                "u".into(),
                vec![Value::Uint32(1), Value::Uint32(2)],
            ))),
            Value::Variant(Box::new(Value::Uint64(u64::MAX))),
            Value::Variant(Box::new(Value::Array(
                "y".into(),
                b"/a\0".iter().map(|b| Value::Byte(*b)).collect(),
            ))),
            Value::Variant(Box::new(Value::ObjectPath("/org/x".into()))),
        ];
        let bytes = encode(&values);
        assert_eq!(&bytes[..4], &[2, b'a', b'u', 0]);
        let back = decode(&bytes, "vvvv");
        assert_eq!(back, values);
        assert_eq!(back[1].as_u64(), Some(u64::MAX));
        assert_eq!(back[2].as_bytes().unwrap(), b"/a\0");
        assert_eq!(back[3].as_str(), Some("/org/x"));
    }

    #[test]
    fn start_transient_unit_arguments_have_its_signature() {
        let args = [
            Value::Str("crius-1.scope".into()),
            Value::Str("replace".into()),
            Value::Array(
                "(sv)".into(),
                vec![
                    Value::property("PIDs", Value::Array("u".into(), vec![Value::Uint32(9)])),
                    Value::property("MemoryMax", Value::Uint64(1 << 20)),
                ],
            ),
            Value::Array("(sa(sv))".into(), Vec::new()),
        ];
        let sig: String = args.iter().map(Value::signature).collect();
        assert_eq!(sig, "ssa(sv)a(sa(sv))");
        assert_eq!(decode(&encode(&args), &sig), args);
    }

    #[test]
    fn a_variant_holding_string_pairs_pads_each_struct_to_eight() {
        // DeviceAllow's shape: a(ss).
        let pair =
            |p: &str, a: &str| Value::Struct(vec![Value::Str(p.into()), Value::Str(a.into())]);
        let list = Value::Array(
            "(ss)".into(),
            vec![pair("/dev/char/1:3", "rwm"), pair("char-pts", "rw")],
        );
        assert_eq!(list.signature(), "a(ss)");
        let variant = Value::Variant(Box::new(list.clone()));
        let bytes = encode(std::slice::from_ref(&variant));
        // Signature "a(ss)" at 0..7; the length at 8 (aligned to 4); the first struct
        // at 16 (aligned to 8): "/dev/char/1:3" 16..34, "rwm" 36..44; the second struct
        // at 48: "char-pts" 48..61, "rw" 64..71.
        assert_eq!(&bytes[..7], &[5, b'a', b'(', b's', b's', b')', 0]);
        assert_eq!(&bytes[8..12], &55u32.to_le_bytes());
        assert_eq!(&bytes[16..20], &13u32.to_le_bytes());
        assert_eq!(&bytes[20..33], b"/dev/char/1:3");
        assert_eq!(&bytes[36..44], &[3, 0, 0, 0, b'r', b'w', b'm', 0]);
        assert_eq!(&bytes[44..48], &[0, 0, 0, 0]);
        assert_eq!(&bytes[48..52], &8u32.to_le_bytes());
        assert_eq!(&bytes[64..71], &[2, 0, 0, 0, b'r', b'w', 0]);
        assert_eq!(bytes.len(), 71);
        assert_eq!(decode(&bytes, "v"), vec![variant]);
        // As a unit property, beside others, and back.
        let props = Value::Array(
            "(sv)".into(),
            vec![
                Value::property("DevicePolicy", Value::Str("strict".into())),
                Value::property("DeviceAllow", list),
            ],
        );
        assert_eq!(
            decode(&encode(&[Value::Byte(1), props.clone()]), "ya(sv)")[1],
            props
        );
    }

    #[test]
    fn an_empty_string_pair_list_in_a_variant_still_pads_to_eight() {
        // What clears DeviceAllow=: the length, then padding to the struct alignment.
        let empty = Value::Variant(Box::new(Value::Array("(ss)".into(), Vec::new())));
        let bytes = encode(std::slice::from_ref(&empty));
        assert_eq!(
            bytes,
            [5, b'a', b'(', b's', b's', b')', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(decode(&bytes, "v"), vec![empty]);
        // A pair list holding anything but (ss) is refused, not sent.
        let wrong = Value::Array(
            "(ss)".into(),
            vec![Value::Struct(vec![Value::Str("a".into())])],
        );
        assert!(Writer::default().value(&wrong).is_err());
    }

    #[test]
    fn a_method_call_header_is_padded_to_eight_before_the_body() {
        let msg = method_call(
            3,
            Some("org.freedesktop.systemd1"),
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "GetUnit",
            &[Value::Str("a.scope".into())],
        )
        .unwrap();
        assert_eq!(&msg[..4], &[b'l', METHOD_CALL, 0, 1]);
        let body_len = u32::from_le_bytes(msg[4..8].try_into().unwrap()) as usize;
        assert_eq!(body_len, 4 + 7 + 1);
        assert_eq!(u32::from_le_bytes(msg[8..12].try_into().unwrap()), 3);
        let fields_len = u32::from_le_bytes(msg[12..16].try_into().unwrap()) as usize;
        let header = (16 + fields_len).div_ceil(8) * 8;
        assert_eq!(msg.len(), header + body_len);
        assert_eq!(&msg[header + 4..header + 11], b"a.scope");
        let mut r = Reader::new(&msg, false);
        r.pos = 12;
        let Value::Array(_, fields) = r.value("a(yv)", 0).unwrap() else {
            panic!("header fields are an array");
        };
        assert_eq!(fields.len(), 5);
        assert_eq!(
            fields[4],
            Value::Struct(vec![
                Value::Byte(FIELD_SIGNATURE),
                Value::Variant(Box::new(Value::Signature("s".into())))
            ])
        );
    }

    #[test]
    fn big_endian_replies_are_read() {
        let bytes = [0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        let mut r = Reader::new(&bytes, true);
        assert_eq!(r.value("u", 0).unwrap(), Value::Uint32(2));
        assert_eq!(r.value("t", 0).unwrap(), Value::Uint64(256));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for (bytes, sig) in [
            (&[5u8, 0, 0, 0, b'a'][..], "s"),
            (&[0xff, 0xff, 0xff, 0x7f][..], "au"),
            (&[1, b'a', 0][..], "v"),
            (&[2, 0, 0, 0, b'a', b'b', 1][..], "s"),
        ] {
            assert!(Reader::new(bytes, false).value(sig, 0).is_err(), "{sig}");
        }
        assert!(single_types("a(").is_err());
        assert!(single_types("()").is_err());
        assert!(single_types("z").is_err());
        assert_eq!(
            single_types("sa(sv)a(sa(sv))").unwrap(),
            ["s", "a(sv)", "a(sa(sv))"]
        );
    }

    #[test]
    fn a_silent_peer_is_a_timeout_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sock");
        // Never accepted: the connection completes on the backlog and nothing answers.
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = Connection::open(&path, Transport::Peer, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(err, DbusError::Timeout { .. }), "{err}");
        assert!(err.to_string().contains("hung"), "{err}");
    }

    #[test]
    fn private_sockets_are_peer_to_peer() {
        assert_eq!(
            Transport::for_path(Path::new("/run/systemd/private")),
            Transport::Peer
        );
        assert_eq!(
            Transport::for_path(Path::new("/tmp/x/systemd/private")),
            Transport::Peer
        );
        assert_eq!(
            Transport::for_path(Path::new("/run/dbus/system_bus_socket")),
            Transport::Bus
        );
    }
}
