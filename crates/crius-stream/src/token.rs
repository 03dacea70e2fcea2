//! Single-use, expiring, unguessable tokens naming a pending stream request.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;

use crate::backend::{AttachRequest, ExecRequest, PortForwardRequest};
use crate::{Error, Result};

/// Random bytes in a token (128 bits).
const TOKEN_BYTES: usize = 16;

/// A request waiting for its client to connect.
#[derive(Debug, Clone)]
pub(crate) enum Pending {
    Exec(ExecRequest),
    Attach(AttachRequest),
    PortForward(PortForwardRequest),
}

impl Pending {
    /// The URL path segment serving this kind of request.
    pub(crate) fn path(&self) -> &'static str {
        match self {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        }
    }
}

/// Outstanding tokens. Each is removed on first use, used or not valid.
#[derive(Debug)]
pub(crate) struct TokenRegistry {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, (Instant, Pending)>>,
}

impl TokenRegistry {
    pub(crate) fn new(ttl: Duration, max: usize) -> Self {
        TokenRegistry {
            ttl,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Stores `pending` under a fresh token and returns the token.
    pub(crate) fn insert(&self, pending: Pending) -> Result<String> {
        let token = random_token()?;
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|_, (expiry, _)| *expiry > now);
        if entries.len() >= self.max {
            return Err(Error::TooManyTokens(entries.len()));
        }
        entries.insert(token.clone(), (now + self.ttl, pending));
        Ok(token)
    }

    /// Removes the token and returns its request if it is still valid and
    /// names a request served at `path`.
    pub(crate) fn take(&self, path: &str, token: &str) -> Option<Pending> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (expiry, pending) = entries.remove(token)?;
        if expiry <= Instant::now() || pending.path() != path {
            return None;
        }
        Some(pending)
    }
}

/// 128 random bits from the kernel, URL-safe base64 without padding.
fn random_token() -> Result<String> {
    let mut buf = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(Error::Random)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pf() -> Pending {
        Pending::PortForward(PortForwardRequest {
            pod_id: "p".into(),
            ports: vec![80],
        })
    }

    #[test]
    fn token_is_single_use() {
        let reg = TokenRegistry::new(Duration::from_secs(60), 10);
        let t = reg.insert(pf()).unwrap();
        assert!(reg.take("portforward", &t).is_some());
        assert!(reg.take("portforward", &t).is_none());
    }

    #[test]
    fn token_for_another_path_is_refused_and_burnt() {
        let reg = TokenRegistry::new(Duration::from_secs(60), 10);
        let t = reg.insert(pf()).unwrap();
        assert!(reg.take("exec", &t).is_none());
        assert!(reg.take("portforward", &t).is_none());
    }

    #[test]
    fn expired_token_is_refused() {
        let reg = TokenRegistry::new(Duration::from_millis(1), 10);
        let t = reg.insert(pf()).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(reg.take("portforward", &t).is_none());
    }

    #[test]
    fn tokens_are_distinct_and_long() {
        let reg = TokenRegistry::new(Duration::from_secs(60), 10);
        let a = reg.insert(pf()).unwrap();
        let b = reg.insert(pf()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
    }

    #[test]
    fn outstanding_tokens_are_capped() {
        let reg = TokenRegistry::new(Duration::from_secs(60), 2);
        reg.insert(pf()).unwrap();
        reg.insert(pf()).unwrap();
        let err = reg.insert(pf()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::ResourceExhausted);
    }
}
