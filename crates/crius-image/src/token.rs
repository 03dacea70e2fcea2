//! The OAuth2 refresh-token exchange for identity tokens (the Docker registry token
//! spec's `grant_type=refresh_token`): an identity token is not a bearer token itself;
//! it buys one from the realm the registry's `WWW-Authenticate` challenge names.

use std::collections::HashMap;

use crate::config::Endpoint;
use crate::error::{Error, Result};

/// Trades `identity_token` for an access token able to pull `repository` from `ep`.
pub(crate) async fn exchange_identity_token(
    ep: &Endpoint,
    repository: &str,
    identity_token: &str,
) -> Result<String> {
    let fail = |reason: String| Error::Unauthorized {
        registry: ep.host.clone(),
        reason,
    };
    let scheme = if ep.http { "http" } else { "https" };
    let host = if ep.host == "docker.io" {
        "index.docker.io"
    } else {
        ep.host.as_str()
    };
    let client = reqwest::Client::new();
    let probe = client
        .get(format!("{scheme}://{host}/v2/"))
        .send()
        .await
        .map_err(|e| Error::Registry {
            reference: host.to_string(),
            reason: e.to_string(),
        })?;
    let header = probe
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| fail("registry asked for no token; identity token unusable".into()))?;
    let challenge = parse_bearer_challenge(header)
        .ok_or_else(|| fail(format!("not a bearer challenge: {header}")))?;
    let realm = challenge
        .get("realm")
        .ok_or_else(|| fail("bearer challenge without realm".into()))?;
    if !(realm.starts_with("https://") || realm.starts_with("http://")) {
        return Err(fail(format!("token realm {realm:?} is not an http(s) URL")));
    }
    let mut body = format!(
        "grant_type=refresh_token&client_id=crius&refresh_token={}&scope={}",
        form_encode(identity_token),
        form_encode(&format!("repository:{repository}:pull"))
    );
    if let Some(service) = challenge.get("service") {
        body.push_str(&format!("&service={}", form_encode(service)));
    }
    let resp = client
        .post(realm.as_str())
        .header(
            reqwest::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .body(body)
        .send()
        .await
        .map_err(|e| Error::Registry {
            reference: host.to_string(),
            reason: e.to_string(),
        })?;
    if !resp.status().is_success() {
        return Err(fail(format!("token endpoint answered {}", resp.status())));
    }
    let bytes = resp.bytes().await.map_err(|e| fail(e.to_string()))?;
    let v: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("token response: {e}")))?;
    v.get("access_token")
        .or_else(|| v.get("token"))
        .and_then(|t| t.as_str())
        .map(str::to_string)
        .ok_or_else(|| fail("token response has no access_token".into()))
}

/// `Bearer realm="…",service="…",scope="…"` → its parameters.
fn parse_bearer_challenge(header: &str) -> Option<HashMap<String, String>> {
    let rest = header
        .trim()
        .strip_prefix("Bearer ")
        .or_else(|| header.trim().strip_prefix("bearer "))?;
    let mut out = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
        if key.is_empty() || chars.next() != Some('=') {
            break;
        }
        let value: String = if chars.peek() == Some(&'"') {
            chars.next();
            let v = std::iter::from_fn(|| chars.next_if(|c| *c != '"')).collect();
            chars.next();
            v
        } else {
            std::iter::from_fn(|| chars.next_if(|c| *c != ',')).collect()
        };
        out.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some(out)
}

fn form_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_parameters_are_parsed() {
        let c = parse_bearer_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#).unwrap();
        assert_eq!(c["realm"], "https://auth.example/token");
        assert_eq!(c["service"], "registry.example");
        assert_eq!(c["scope"], "repository:a/b:pull,push");
        assert!(parse_bearer_challenge("Basic realm=\"x\"").is_none());
        assert_eq!(form_encode("a b/c:d"), "a+b%2Fc%3Ad");
    }
}
