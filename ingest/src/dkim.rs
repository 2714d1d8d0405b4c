//! DKIM verification of mailed reports (RFC 6376), for the `dkim` column and for receivers
//! that refuse unsigned reports.
//!
//! RFC 8460 §3 asks senders to sign mailed reports with DKIM and lets a receiver discard what
//! is unsigned or does not verify. Real senders' keys rotate and break, so by default the
//! outcome is only recorded; [`crate::smtp::DkimPolicy::Enforce`] turns it into a refusal.
//!
//! The cryptography, the DNS key lookup and the header/body canonicalisation are Stalwart's
//! `mail-auth`; this module reduces its per-signature results to the three outcomes the
//! tables know ([`DkimOutcome`]) plus one bit: whether a retry might change a failure (a DNS
//! timeout, a server failure).
//!
//! Key lookups go through a small cache. Keys put there with [`DkimVerifier::insert_key`] are
//! never evicted: that is how tests serve a key without DNS, and how an operator could pin a
//! sender's key.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::resolver::ToFqdn;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use thiserror::Error;
use tlsrpt_schemas::DkimOutcome;

/// How long one DNS query may take before the resolver tries again or gives up.
const DNS_QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// The most looked-up records kept (pinned keys do not count).
const MAX_CACHED_RECORDS: usize = 4096;

/// What verifying one message found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DkimVerdict {
    /// Pass when any signature verified, Fail when signatures exist and none verified, None
    /// for an unsigned message.
    pub outcome: DkimOutcome,
    /// A failure that a retry might turn into a pass: no signature verified and at least one
    /// could not be checked for a passing reason (DNS timeout or server failure, or the
    /// verification as a whole ran out of time).
    pub temporary: bool,
    /// Why the first failing signature failed (`d=example.com s=sel: ...`), for logs and
    /// replies; `None` on pass and for unsigned mail.
    pub reason: Option<String>,
}

impl DkimVerdict {
    fn unsigned() -> Self {
        Self {
            outcome: DkimOutcome::None,
            temporary: false,
            reason: None,
        }
    }
}

/// A DKIM key record that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DkimError {
    /// The text is not a DKIM key record (`v=DKIM1; k=rsa; p=...`).
    #[error("{name}: not a usable DKIM key record: {reason}")]
    BadKeyRecord { name: String, reason: String },
    /// The DNS resolver could not be set up.
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// Verifies DKIM signatures; share one per process (it holds the key cache).
pub struct DkimVerifier {
    authenticator: MessageAuthenticator,
    cache: KeyCache,
    timeout: Duration,
}

impl std::fmt::Debug for DkimVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimVerifier")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DkimVerifier {
    /// Looks keys up with the system's resolver configuration (`/etc/resolv.conf`), or with
    /// Cloudflare's and Google's public resolvers when that cannot be read. One message's
    /// verification takes at most `timeout`; past it the outcome is a temporary failure.
    pub fn system(timeout: Duration) -> Self {
        let (config, mut options) = read_system_conf().unwrap_or_else(|err| {
            tracing::warn!(
                "Cannot read the system DNS configuration ({err}); DKIM keys are looked up at Cloudflare and Google."
            );
            let mut servers = NameServerConfigGroup::cloudflare();
            servers.merge(NameServerConfigGroup::google());
            (
                ResolverConfig::from_parts(None, Vec::new(), servers),
                ResolverOpts::default(),
            )
        });
        options.timeout = DNS_QUERY_TIMEOUT;
        options.attempts = 2;
        Self::with_resolver(config, options, timeout)
    }

    /// Looks nothing up: only keys given to [`insert_key`](Self::insert_key) are known, and
    /// a signature by any other key fails as a temporary error (the lookup could not be
    /// made). For tests, and for receivers that accept only pinned senders.
    pub fn offline() -> Self {
        // No name servers: every query fails at once, without touching the network.
        Self::with_resolver(
            ResolverConfig::default(),
            ResolverOpts::default(),
            Duration::from_secs(10),
        )
    }

    fn with_resolver(config: ResolverConfig, options: ResolverOpts, timeout: Duration) -> Self {
        let authenticator = MessageAuthenticator::new(config.clone(), options.clone())
            .or_else(|_| MessageAuthenticator::new(ResolverConfig::default(), options))
            .expect("a resolver without name servers always builds");
        Self {
            authenticator,
            cache: KeyCache::default(),
            timeout,
        }
    }

    /// The most one message's verification may take.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Serves `record` (the TXT record text, `v=DKIM1; k=ed25519; p=...`) as the key of
    /// `selector` at `domain`, ahead of DNS and for as long as the verifier lives.
    pub fn insert_key(&self, selector: &str, domain: &str, record: &str) -> Result<(), DkimError> {
        let name = format!("{selector}._domainkey.{domain}").to_fqdn();
        let key = DomainKey::parse(record.as_bytes()).map_err(|err| DkimError::BadKeyRecord {
            name: name.to_string(),
            reason: err.to_string(),
        })?;
        self.cache.pin(name, Txt::from(key));
        Ok(())
    }

    /// Verifies every DKIM signature of the raw RFC 5322 `message`.
    pub async fn verify(&self, message: &[u8]) -> DkimVerdict {
        let Some(parsed) = AuthenticatedMessage::parse(message) else {
            // No header at all: nothing can have been signed.
            return DkimVerdict::unsigned();
        };
        if parsed.dkim_headers.is_empty() {
            return DkimVerdict::unsigned();
        }
        let params = Parameters::new(&parsed).with_txt_cache(&self.cache);
        let outputs = match tokio::time::timeout(
            self.timeout,
            self.authenticator.verify_dkim(params),
        )
        .await
        {
            Ok(outputs) => outputs,
            Err(_elapsed) => {
                return DkimVerdict {
                    outcome: DkimOutcome::Fail,
                    temporary: true,
                    reason: Some(format!(
                        "verification did not finish within {} s",
                        self.timeout.as_secs_f32()
                    )),
                };
            }
        };
        if outputs
            .iter()
            .any(|output| matches!(output.result(), DkimResult::Pass))
        {
            return DkimVerdict {
                outcome: DkimOutcome::Pass,
                temporary: false,
                reason: None,
            };
        }
        let temporary = outputs
            .iter()
            .any(|output| matches!(output.result(), DkimResult::TempError(_)));
        let reason = outputs.first().map(|output| {
            let why = match output.result() {
                DkimResult::Neutral(err)
                | DkimResult::Fail(err)
                | DkimResult::PermError(err)
                | DkimResult::TempError(err) => err.to_string(),
                DkimResult::Pass | DkimResult::None => output.result().to_string(),
            };
            match output.signature() {
                Some(signature) => format!("d={} s={}: {why}", signature.d, signature.s),
                None => why,
            }
        });
        DkimVerdict {
            outcome: DkimOutcome::Fail,
            temporary,
            reason,
        }
    }
}

/// The TXT record cache handed to `mail-auth`: pinned keys first, then what DNS answered,
/// until the record's TTL runs out.
#[derive(Default)]
struct KeyCache {
    records: Mutex<CachedRecords>,
}

#[derive(Default)]
struct CachedRecords {
    pinned: HashMap<Box<str>, Txt>,
    looked_up: HashMap<Box<str>, (Txt, Instant)>,
}

impl KeyCache {
    fn pin(&self, name: Box<str>, record: Txt) {
        self.lock().pinned.insert(name, record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CachedRecords> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ResolverCache<Box<str>, Txt> for KeyCache {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut records = self.lock();
        if let Some(record) = records.pinned.get(name) {
            return Some(record.clone());
        }
        match records.looked_up.get(name) {
            Some((record, valid_until)) if *valid_until > Instant::now() => Some(record.clone()),
            Some(_) => {
                records.looked_up.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().looked_up.remove(name).map(|(record, _)| record)
    }

    fn insert(&self, name: Box<str>, record: Txt, valid_until: Instant) {
        let mut records = self.lock();
        if records.looked_up.len() >= MAX_CACHED_RECORDS {
            let now = Instant::now();
            records.looked_up.retain(|_, (_, until)| *until > now);
            if records.looked_up.len() >= MAX_CACHED_RECORDS {
                // Still full of live records: start over rather than track recency; a
                // lookup more per sender is cheap next to the bookkeeping.
                records.looked_up.clear();
            }
        }
        records.looked_up.insert(name, (record, valid_until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_record_that_is_not_one_is_refused_with_its_name() {
        let verifier = DkimVerifier::offline();
        let err = verifier
            .insert_key("sel", "Example.COM", "v=DKIM1; k=rsa; p=!!!")
            .unwrap_err();
        assert!(
            err.to_string().starts_with("sel._domainkey.example.com.:"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn unsigned_mail_is_none_and_a_signature_without_a_key_is_a_temporary_failure() {
        let verifier = DkimVerifier::offline();
        let unsigned = b"From: a@example.com\r\nSubject: x\r\n\r\nbody\r\n";
        assert_eq!(verifier.verify(unsigned).await, DkimVerdict::unsigned());
        assert_eq!(verifier.verify(b"").await, DkimVerdict::unsigned());

        // A well-formed signature with the right body hash, whose key cannot be looked up
        // (offline, there is no DNS): a failure a retry might fix.
        let signed = b"DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com;\r\n s=sel; h=from:subject; bh=Ck5SoRNWUpSR4X0COv7R5ub2pUTtl6xz4dTFz++ji4M=;\r\n b=AAAA\r\nFrom: a@example.com\r\nSubject: x\r\n\r\nbody\r\n";
        let verdict = verifier.verify(signed).await;
        assert_eq!(verdict.outcome, DkimOutcome::Fail);
        assert!(verdict.temporary, "{verdict:?}");
        let reason = verdict.reason.unwrap();
        assert!(reason.starts_with("d=example.com s=sel: "), "{reason}");
    }
}
