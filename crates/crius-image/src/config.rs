//! Registry configuration (embedded in the daemon config) and pull credentials.
//!
//! ```toml
//! [registries."127.0.0.1:5000"]
//! insecure = true                        # plain HTTP
//! [registries."registry.k8s.io"]
//! mirrors = ["http://127.0.0.1:5000"]    # tried in order, then the registry itself
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Settings for one registry host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Talk plain HTTP to this registry.
    pub insecure: bool,
    /// Mirrors (`http://host:port` or `https://host`), tried in order before the
    /// registry itself, with the same repository paths.
    pub mirrors: Vec<String>,
    /// Credentials used when a pull request carries none (`[registries."host".auth]`).
    /// Never sent to mirrors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth: Option<PullAuth>,
}

/// Everything the image service reads from the daemon config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImageConfig {
    /// Per-registry settings keyed by host (`docker.io`, `127.0.0.1:5000`).
    pub registries: BTreeMap<String, RegistryConfig>,
    /// Layers downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Layers at least this big get progress lines at info level.
    pub progress_min_bytes: u64,
}

impl Default for ImageConfig {
    fn default() -> Self {
        Self {
            registries: BTreeMap::new(),
            max_concurrent_downloads: 3,
            progress_min_bytes: 16 << 20,
        }
    }
}

/// One place to fetch from: a mirror or the registry itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host[:port]`.
    pub host: String,
    /// Plain HTTP.
    pub http: bool,
}

impl ImageConfig {
    /// Checks every key; returns the first problem.
    pub fn validate(&self) -> Result<()> {
        if self.max_concurrent_downloads == 0 || self.max_concurrent_downloads > 64 {
            return Err(Error::InvalidConfig(
                "max_concurrent_downloads must be between 1 and 64".into(),
            ));
        }
        for (host, reg) in &self.registries {
            if host.is_empty() || host.contains('/') {
                return Err(Error::InvalidConfig(format!(
                    "registry key {host:?} must be a host[:port]"
                )));
            }
            for m in &reg.mirrors {
                parse_mirror(m)?;
            }
        }
        Ok(())
    }

    /// Where to fetch `registry`'s images from, in order.
    pub fn endpoints(&self, registry: &str) -> Result<Vec<Endpoint>> {
        let reg = self.registries.get(registry).cloned().unwrap_or_default();
        let mut out = reg
            .mirrors
            .iter()
            .map(|m| parse_mirror(m))
            .collect::<Result<Vec<_>>>()?;
        out.push(Endpoint {
            host: registry.to_string(),
            http: reg.insecure,
        });
        Ok(out)
    }
}

fn parse_mirror(m: &str) -> Result<Endpoint> {
    let (http, rest) = if let Some(r) = m.strip_prefix("http://") {
        (true, r)
    } else if let Some(r) = m.strip_prefix("https://") {
        (false, r)
    } else {
        (false, m)
    };
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(Error::InvalidConfig(format!(
            "mirror {m:?} must be http(s)://host[:port]"
        )));
    }
    Ok(Endpoint {
        host: host.to_string(),
        http,
    })
}

/// Credentials for one pull, as CRI's `AuthConfig` carries them (and as the config's
/// `[registries."host".auth]` table spells them).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PullAuth {
    /// Basic auth user.
    pub username: String,
    /// Basic auth password.
    pub password: String,
    /// Base64 `user:password`, used when username is empty.
    pub auth: String,
    /// An identity token (OAuth2 refresh token), traded for a bearer token at the
    /// registry's token realm before pulling.
    pub identity_token: String,
    /// A registry bearer token.
    pub registry_token: String,
}

impl std::fmt::Debug for PullAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PullAuth")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl PullAuth {
    /// The identity token, when it is the only credential given: it must be traded
    /// for a bearer token at the registry's token realm.
    pub fn identity_only(&self) -> Option<&str> {
        let only =
            self.username.is_empty() && self.auth.is_empty() && self.registry_token.is_empty();
        (only && !self.identity_token.is_empty()).then_some(self.identity_token.as_str())
    }

    /// True when no credential is set.
    pub fn is_empty(&self) -> bool {
        *self == PullAuth::default()
    }

    /// The request's credentials, else the ones configured for `registry`.
    pub fn or_configured<'a>(&'a self, config: &'a ImageConfig, registry: &str) -> &'a PullAuth {
        if self.is_empty() {
            if let Some(a) = config
                .registries
                .get(registry)
                .and_then(|r| r.auth.as_ref())
            {
                return a;
            }
        }
        self
    }

    /// The oci-client form: basic, bearer or anonymous.
    pub fn to_registry_auth(&self) -> Result<oci_client::secrets::RegistryAuth> {
        use oci_client::secrets::RegistryAuth;
        if !self.username.is_empty() {
            return Ok(RegistryAuth::Basic(
                self.username.clone(),
                self.password.clone(),
            ));
        }
        if !self.auth.is_empty() {
            let decoded = base64_decode(self.auth.trim())
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| {
                    Error::InvalidConfig("auth is not base64 of user:password".into())
                })?;
            let (u, p) = decoded
                .split_once(':')
                .ok_or_else(|| Error::InvalidConfig("auth must decode to user:password".into()))?;
            return Ok(RegistryAuth::Basic(u.to_string(), p.to_string()));
        }
        if !self.registry_token.is_empty() {
            return Ok(RegistryAuth::Bearer(self.registry_token.clone()));
        }
        Ok(RegistryAuth::Anonymous)
    }
}

/// Standard base64 (padding optional); `None` on any invalid character.
fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_shape_from_the_issue_parses_and_rejects_unknown_keys() {
        let text = r#"
[registries."127.0.0.1:5000"]
insecure = true
[registries."registry.k8s.io"]
mirrors = ["http://127.0.0.1:5000"]
"#;
        let c: ImageConfig = toml::from_str(text).unwrap();
        c.validate().unwrap();
        assert!(c.registries["127.0.0.1:5000"].insecure);
        let eps = c.endpoints("registry.k8s.io").unwrap();
        assert_eq!(
            eps[0],
            Endpoint {
                host: "127.0.0.1:5000".into(),
                http: true
            }
        );
        assert_eq!(
            eps[1],
            Endpoint {
                host: "registry.k8s.io".into(),
                http: false
            }
        );
        assert_eq!(c.max_concurrent_downloads, 3);
        assert!(toml::from_str::<ImageConfig>("[registries.\"x\"]\nbogus = 1\n").is_err());
        let with_auth: ImageConfig =
            toml::from_str("[registries.\"r.io\".auth]\nusername = \"u\"\npassword = \"p\"\n")
                .unwrap();
        let configured = PullAuth::default()
            .or_configured(&with_auth, "r.io")
            .clone();
        assert_eq!(configured.username, "u");
        let given = PullAuth {
            username: "me".into(),
            ..Default::default()
        };
        assert_eq!(given.or_configured(&with_auth, "r.io").username, "me");
        assert!(toml::to_string(&ImageConfig::default()).is_ok());
    }

    #[test]
    fn auth_field_decodes_base64_user_and_password() {
        let a = PullAuth {
            auth: "dXNlcjpwYXNz".into(),
            ..Default::default()
        };
        assert!(matches!(a.to_registry_auth().unwrap(),
            oci_client::secrets::RegistryAuth::Basic(u, p) if u == "user" && p == "pass"));
        assert!(PullAuth {
            auth: "!!".into(),
            ..Default::default()
        }
        .to_registry_auth()
        .is_err());
        let t = PullAuth {
            registry_token: "tok".into(),
            ..Default::default()
        };
        assert!(matches!(t.to_registry_auth().unwrap(),
            oci_client::secrets::RegistryAuth::Bearer(t) if t == "tok"));
    }
}
