//! Who may ask, and what they may see: bearer tokens for the SQL services (HTTP and Flight
//! SQL), each allowed every policy domain or only some.
//!
//! Tokens are kept as SHA-256 digests, in a TOML file an operator writes
//! (`tlsrpt token new` prints a token and its entry):
//!
//! ```toml
//! [[token]]
//! name = "analysts"
//! sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
//!
//! [[token]]
//! name = "customer-acme"
//! sha256 = "…"
//! domains = ["acme.example", "acme-mail.example"]
//! ```
//!
//! A plain digest is enough at rest because the tokens are random 256-bit strings, not
//! passwords: nothing smaller than the whole space can be searched, so a slow hash would add
//! cost and no safety. For the same reason looking a presented token's digest up in a map
//! leaks nothing useful through timing: an attacker learns about digests of guesses, never
//! about a token.
//!
//! A token limited to domains queries the same catalog, in which every table carrying
//! `policy_domain` shows only rows of those domains and `reports` only the reports whose
//! every policy is for those domains (a report also covering another domain would show that
//! domain's totals and raw JSON). The filter is part of the plan of each table
//! ([`crate::engine`]), so views, joins and subqueries see the same rows.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The policy domains a client may see.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every row.
    All,
    /// Only rows of these domains (lower case, without a trailing dot).
    Domains(Arc<BTreeSet<String>>),
}

/// What a client that presented a token is allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The token's name from the file, for logs; `anonymous` when no tokens are configured.
    pub name: Arc<str>,
    pub scope: Scope,
}

/// Why a request was refused before any SQL was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "this service requires a bearer token: send the header `Authorization: Bearer <token>`"
    )]
    Missing,
    #[error(
        "the Authorization header is not `Bearer <token>` (or `Basic` with the token as the password)"
    )]
    Malformed,
    #[error("the token is not known to this service")]
    Unknown,
}

/// The tokens a service accepts; with none, every client is let in and sees everything
/// (the binary allows that only on loopback addresses).
#[derive(Debug, Clone)]
pub struct Access {
    /// SHA-256 of each token, to what it grants.
    tokens: Option<HashMap<[u8; 32], Grant>>,
}

/// One `[[token]]` of the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    domains: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

impl Access {
    /// No tokens: everyone sees everything.
    pub fn open() -> Self {
        Self { tokens: None }
    }

    /// Whether clients need no token.
    pub fn is_open(&self) -> bool {
        self.tokens.is_none()
    }

    /// The tokens of a TOML file (the module's documentation shows the form).
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The tokens of a TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let file: TokenFile = toml::from_str(text).map_err(|e| e.to_string())?;
        if file.token.is_empty() {
            return Err(
                "no [[token]] entries: a service with a token file admits only its tokens, \
                 so an empty file would admit nobody (create one with `tlsrpt token new`)"
                    .to_owned(),
            );
        }
        let mut tokens = HashMap::new();
        for entry in file.token {
            let name = entry.name.trim();
            if name.is_empty() {
                return Err("a [[token]] has an empty name".to_owned());
            }
            let digest = parse_digest(&entry.sha256)
                .ok_or_else(|| format!("token {name:?}: sha256 is not 64 hex digits"))?;
            let scope = match entry.domains {
                None => Scope::All,
                Some(domains) => {
                    let domains = domains
                        .iter()
                        .map(|d| {
                            normalized_domain(d).ok_or_else(|| {
                                format!("token {name:?}: {d:?} is not a domain name")
                            })
                        })
                        .collect::<Result<BTreeSet<_>, _>>()?;
                    if domains.is_empty() {
                        return Err(format!(
                            "token {name:?}: domains = [] would see nothing; leave `domains` out \
                             for a token that sees every domain"
                        ));
                    }
                    Scope::Domains(Arc::new(domains))
                }
            };
            let grant = Grant {
                name: Arc::from(name),
                scope,
            };
            if tokens.insert(digest, grant).is_some() {
                return Err(format!("token {name:?}: the same sha256 appears twice"));
            }
        }
        Ok(Self {
            tokens: Some(tokens),
        })
    }

    /// What the `Authorization` header (if any) grants: `Bearer <token>`, or `Basic` with
    /// the token as the password (any user name), which is what Flight SQL clients given a
    /// user and password send in their handshake.
    pub fn authorize(&self, authorization: Option<&[u8]>) -> Result<Grant, Denied> {
        let Some(tokens) = &self.tokens else {
            return Ok(Grant {
                name: Arc::from("anonymous"),
                scope: Scope::All,
            });
        };
        let header = authorization.ok_or(Denied::Missing)?;
        let token = token_of(header).ok_or(Denied::Malformed)?;
        tokens
            .get(&digest(token.as_bytes()))
            .cloned()
            .ok_or(Denied::Unknown)
    }
}

/// The token in an `Authorization` header value.
pub fn token_of(header: &[u8]) -> Option<String> {
    let header = std::str::from_utf8(header).ok()?.trim();
    let (scheme, credentials) = header.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return (!credentials.is_empty()).then(|| credentials.to_owned());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        // With or without padding: the Go Flight client (under ADBC's driver) leaves it out.
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        let decoded = lenient.decode(credentials).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_user, password) = decoded.split_once(':')?;
        return (!password.is_empty()).then(|| password.to_owned());
    }
    None
}

/// A new random token (256 bits, URL-safe text) and its SHA-256 in hex, for the file.
pub fn new_token() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let token = format!(
        "tlsrpt_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hex = hex_digest(&token);
    (token, hex)
}

/// The SHA-256 of a token in hex, as the file holds it.
pub fn hex_digest(token: &str) -> String {
    digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `domain` in lower case without a trailing dot, if it is a plausible domain name (letters,
/// digits, `-`, `_` and dots). Reports write policy domains in lower case; one written
/// otherwise is not matched (none of the real reports seen does).
pub fn normalized_domain(domain: &str) -> Option<String> {
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    let plausible = !domain.is_empty()
        && domain.len() <= 253
        && domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && !domain.split('.').any(str::is_empty);
    plausible.then_some(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_by_digest_and_carry_their_domains() {
        let (token, hex) = new_token();
        let (other, other_hex) = new_token();
        let access = Access::from_toml(&format!(
            "[[token]]\nname = \"all\"\nsha256 = \"{hex}\"\n\n\
             [[token]]\nname = \"acme\"\nsha256 = \"{other_hex}\"\ndomains = [\"Acme.Example.\"]\n"
        ))
        .unwrap();
        let all = access
            .authorize(Some(format!("Bearer {token}").as_bytes()))
            .unwrap();
        assert_eq!((&*all.name, &all.scope), ("all", &Scope::All));
        let acme = access
            .authorize(Some(format!("bearer  {other}").as_bytes()))
            .unwrap();
        assert_eq!(
            acme.scope,
            Scope::Domains(Arc::new(BTreeSet::from(["acme.example".to_owned()])))
        );
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("dbeaver:{token}"));
        let unpadded =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!("adbc:{token}x"));
        assert_eq!(
            access.authorize(Some(format!("Basic {unpadded}").as_bytes())),
            Err(Denied::Unknown),
            "unpadded base64 is read (and the password checked)"
        );
        assert_eq!(
            access
                .authorize(Some(format!("Basic {basic}").as_bytes()))
                .unwrap()
                .name
                .as_ref(),
            "all"
        );
        assert_eq!(access.authorize(None), Err(Denied::Missing));
        assert_eq!(access.authorize(Some(b"Token abc")), Err(Denied::Malformed));
        assert_eq!(
            access.authorize(Some(format!("Bearer {token}x").as_bytes())),
            Err(Denied::Unknown)
        );
        assert_eq!(
            Access::open().authorize(None).unwrap().scope,
            Scope::All,
            "no tokens configured: open"
        );
    }

    #[test]
    fn a_bad_token_file_is_named_precisely() {
        for (text, expected) in [
            ("", "no [[token]] entries"),
            (
                "[[token]]\nname = \"x\"\nsha256 = \"abc\"\n",
                "not 64 hex digits",
            ),
            (
                "[[token]]\nname = \"x\"\nsha256 = \"{h}\"\ndomains = []\n",
                "would see nothing",
            ),
            (
                "[[token]]\nname = \"x\"\nsha256 = \"{h}\"\ndomains = [\"a b\"]\n",
                "is not a domain name",
            ),
            (
                "[[token]]\nname = \"x\"\nsha256 = \"{h}\"\ndomain = [\"a\"]\n",
                "unknown field",
            ),
        ] {
            let text = text.replace("{h}", &hex_digest("t"));
            let error = Access::from_toml(&text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
