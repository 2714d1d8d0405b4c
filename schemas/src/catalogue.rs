//! What each result type and policy type means for a domain owner, the likely causes, and
//! the fix (RFC 8460 §4.3, the IANA "STARTTLS Validation Result Types" registry).
//!
//! The text is written for the person who runs the domain's mail, not for the sender: it
//! says what the sending servers saw, why that usually happens, and what to run or change.
//! `explain` and the alerts quote it; unknown types get a generic entry that says so.

use serde::Serialize;

use crate::model::{PolicyType, ResultType};

/// How bad a failure is for mail delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Impact {
    /// Mail is refused (or will be) by senders that honour the policy.
    Delivery,
    /// Mail is still delivered, but without the protection the policy promises.
    Protection,
    /// Informational: nothing is wrong with delivery.
    None,
    /// Not known: an unregistered type.
    Unknown,
}

/// One catalogue entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The type as it appears in reports (`certificate-expired`).
    pub code: &'static str,
    /// A short title (`Certificate expired`).
    pub title: &'static str,
    /// What the senders saw, in plain words.
    pub meaning: &'static str,
    /// Why it usually happens, most likely first.
    pub likely_causes: &'static [&'static str],
    /// What the domain owner does about it, in order.
    pub fix: &'static [&'static str],
    /// What it does to mail.
    pub impact: Impact,
    /// A sentence on the impact, depending on the policy mode.
    pub impact_note: &'static str,
    /// Whether the type is in the IANA registry.
    pub registered: bool,
}

const OPENSSL: &str = "Check what an MX presents: `openssl s_client -starttls smtp -connect MX:25 -servername MX` \
                       (replace MX with the receiving-mx-hostname of the report).";
const ENFORCE_NOTE: &str = "With an MTA-STS policy in `enforce` mode or DANE, senders do not deliver to this MX \
                            at all; in `testing` mode they deliver anyway and only report it.";

static RESULT_TYPES: [Entry; 11] = [
    Entry {
        code: "starttls-not-supported",
        title: "STARTTLS not offered",
        meaning: "Sending servers connected to your MX, but it did not offer STARTTLS, so no encrypted \
                  connection could be set up.",
        likely_causes: &[
            "STARTTLS is switched off or misconfigured on the MX (no certificate configured, TLS disabled after an upgrade).",
            "A firewall, load balancer or \"SMTP inspection\" feature strips STARTTLS from the server's greeting.",
            "The MX named in the report is an old or backup host that was never set up for TLS.",
        ],
        fix: &[
            "Connect to the MX yourself and look for `250-STARTTLS` in the EHLO answer: `openssl s_client -starttls smtp -connect MX:25` fails at once if it is missing.",
            "Enable TLS in the mail server with a valid certificate for the MX host name.",
            "Turn off SMTP inspection / ESMTP filtering on firewalls in front of the MX.",
            "Remove hosts that cannot do TLS from the MX records and from the MTA-STS policy's `mx:` lines.",
        ],
        impact: Impact::Delivery,
        impact_note: ENFORCE_NOTE,
        registered: true,
    },
    Entry {
        code: "certificate-host-mismatch",
        title: "Certificate name does not match",
        meaning: "Your MX presented a certificate that does not name the host the sender connected to \
                  (neither in the subject alternative names nor a matching wildcard).",
        likely_causes: &[
            "The certificate covers another name (the server's internal name, a default or self-signed certificate).",
            "An MX record was added or renamed without a new certificate.",
            "Several names share one server without SNI-based certificate selection.",
        ],
        fix: &[
            OPENSSL,
            "Issue a certificate whose subject alternative names include every MX host name (or a matching wildcard) and install it on each MX.",
            "Make sure the MTA-STS policy's `mx:` patterns and the MX records name the same hosts as the certificates.",
        ],
        impact: Impact::Delivery,
        impact_note: ENFORCE_NOTE,
        registered: true,
    },
    Entry {
        code: "certificate-expired",
        title: "Certificate expired",
        meaning: "Your MX presented a certificate whose validity period has ended.",
        likely_causes: &[
            "Automatic renewal (ACME / Let's Encrypt) failed or does not run for the mail server.",
            "The certificate was renewed but the mail server was not reloaded and still serves the old one.",
            "One MX of several was forgotten when certificates were replaced.",
        ],
        fix: &[
            "See the dates the MX serves: `openssl s_client -starttls smtp -connect MX:25 -servername MX | openssl x509 -noout -dates`.",
            "Renew the certificate, install it, and reload the mail server (Postfix: `postfix reload`; Exim, Exchange and others likewise).",
            "Check renewal automation and monitor certificate expiry on every MX.",
        ],
        impact: Impact::Delivery,
        impact_note: ENFORCE_NOTE,
        registered: true,
    },
    Entry {
        code: "certificate-not-trusted",
        title: "Certificate not trusted",
        meaning: "Your MX presented a certificate that does not chain to a certificate authority the \
                  sender trusts: self-signed, from a private CA, or missing its intermediate.",
        likely_causes: &[
            "The intermediate certificate is not sent with the server certificate (incomplete chain).",
            "A self-signed or internal-CA certificate is in use.",
            "The chain ends at a root that senders' trust stores have removed.",
        ],
        fix: &[
            "Look at the chain the MX sends: `openssl s_client -starttls smtp -connect MX:25 -servername MX -showcerts`.",
            "Configure the full chain (server certificate followed by intermediates) in the mail server.",
            "Use a certificate from a publicly trusted CA; MTA-STS requires one.",
        ],
        impact: Impact::Delivery,
        impact_note: ENFORCE_NOTE,
        registered: true,
    },
    Entry {
        code: "validation-failure",
        title: "Certificate validation failed",
        meaning: "The certificate of your MX failed validation for a reason not covered by the more \
                  specific types; the failure-reason-code usually says which.",
        likely_causes: &[
            "A certificate problem named in the failure-reason-code (for example an OpenSSL `X509_V_ERR_...` code).",
            "A weak key or signature algorithm, or a certificate not yet valid.",
            "A TLS handshake that fails (no shared protocol version or cipher).",
        ],
        fix: &[
            "Read the failure-reason-code in the report: it names the check that failed.",
            OPENSSL,
            "Replace the certificate or adjust the TLS settings of the MX accordingly.",
        ],
        impact: Impact::Delivery,
        impact_note: ENFORCE_NOTE,
        registered: true,
    },
    Entry {
        code: "tlsa-invalid",
        title: "DANE TLSA record invalid",
        meaning: "Your domain publishes DANE TLSA records for the MX, but they are malformed or none \
                  matches the certificate the MX presents.",
        likely_causes: &[
            "The certificate or key was replaced without publishing the new TLSA record first.",
            "The TLSA record is for the wrong port or host name (it must be `_25._tcp.MX`).",
            "A typo in the record's hash, or a wrong selector or matching type.",
        ],
        fix: &[
            "Compare the records with the certificate: `dig +dnssec TLSA _25._tcp.MX` and a TLSA checker.",
            "Publish a record matching the current key (`3 1 1` plus the SHA-256 of the public key) and keep the old one until the change has propagated.",
            "When rotating keys, publish the new TLSA record at least two TTLs before switching the certificate.",
        ],
        impact: Impact::Delivery,
        impact_note: "Senders using DANE do not deliver to this MX until a TLSA record matches.",
        registered: true,
    },
    Entry {
        code: "dnssec-invalid",
        title: "DNSSEC validation failed",
        meaning: "The sender could not validate the DNSSEC signatures of your MX or TLSA records, so \
                  it could not trust them.",
        likely_causes: &[
            "Expired DNSSEC signatures (the zone was not re-signed).",
            "A key rollover went wrong: the DS record at the parent does not match the zone's keys.",
            "A DNS provider change without moving the DNSSEC keys.",
        ],
        fix: &[
            "Check the chain of trust: `dig +dnssec MX example.com` and a DNSSEC analyser.",
            "Re-sign the zone, or fix the DS record at the registrar to match the current key.",
        ],
        impact: Impact::Delivery,
        impact_note: "Validating senders treat the records as bogus and may not deliver at all.",
        registered: true,
    },
    Entry {
        code: "dane-required",
        title: "DANE required but not usable",
        meaning: "The sender requires DANE for your domain, but no usable TLSA record was found for the MX.",
        likely_causes: &[
            "TLSA records are missing for one of the MX hosts.",
            "The MX's zone is not DNSSEC-signed, so its TLSA records cannot be used.",
        ],
        fix: &[
            "Publish TLSA records at `_25._tcp.MX` for every MX, in a DNSSEC-signed zone.",
            "Check with `dig +dnssec TLSA _25._tcp.MX` that the answer is authenticated (the `ad` flag).",
        ],
        impact: Impact::Delivery,
        impact_note: "The sender does not deliver to this MX.",
        registered: true,
    },
    Entry {
        code: "sts-policy-fetch-error",
        title: "MTA-STS policy could not be fetched",
        meaning: "Your domain announces MTA-STS in DNS, but the sender could not download the policy \
                  from https://mta-sts.<your domain>/.well-known/mta-sts.txt.",
        likely_causes: &[
            "The policy URL answers 404 or 500 (file missing, web server or hosting moved).",
            "The mta-sts host has no valid certificate (expired, wrong name) or does not answer HTTPS.",
            "No DNS record for mta-sts.<your domain>.",
            "The server redirects the policy URL, which RFC 8461 forbids, or serves it with another content type than text/plain.",
        ],
        fix: &[
            "Fetch it as a sender does: `curl -v https://mta-sts.example.com/.well-known/mta-sts.txt` (no redirects; a 200 with text/plain).",
            "Check the certificate of mta-sts.example.com and its renewal.",
            "If you stopped using MTA-STS, publish a policy with `mode: none` for at least max_age before removing the `_mta-sts` TXT record.",
        ],
        impact: Impact::Protection,
        impact_note: "Senders that cached an earlier policy keep applying it until max_age runs out; new \
                      senders deliver without MTA-STS protection.",
        registered: true,
    },
    Entry {
        code: "sts-policy-invalid",
        title: "MTA-STS policy invalid",
        meaning: "The sender fetched your MTA-STS policy but could not parse it or found it invalid.",
        likely_causes: &[
            "A syntax error: a missing `version: STSv1`, `mode` or `max_age` line, or an unknown mode.",
            "An HTML page (an error or login page) served instead of the policy.",
            "Wrong line endings or a byte order mark (rarely a problem, but some senders are strict).",
        ],
        fix: &[
            "Fetch the policy with `curl https://mta-sts.example.com/.well-known/mta-sts.txt` and compare it with RFC 8461 §3.2.",
            "Keep it to `version`, `mode`, `mx` and `max_age` lines, one per line.",
            "After fixing, change the `id=` in the `_mta-sts` TXT record so senders fetch it again.",
        ],
        impact: Impact::Protection,
        impact_note: "Senders cannot apply the policy: mail flows without MTA-STS protection.",
        registered: true,
    },
    Entry {
        code: "sts-webpki-invalid",
        title: "MTA-STS policy host certificate invalid",
        meaning: "The HTTPS certificate of your policy host (mta-sts.<your domain>) could not be validated, \
                  so the sender did not trust the policy.",
        likely_causes: &[
            "The certificate of mta-sts.<your domain> expired or does not name that host.",
            "The intermediate certificate is missing on the web server.",
        ],
        fix: &[
            "Check it: `curl -v https://mta-sts.example.com/.well-known/mta-sts.txt` or `openssl s_client -connect mta-sts.example.com:443 -servername mta-sts.example.com`.",
            "Renew or replace the certificate with one from a public CA covering mta-sts.<your domain>.",
        ],
        impact: Impact::Protection,
        impact_note: "Senders cannot apply the policy: mail flows without MTA-STS protection.",
        registered: true,
    },
];

static UNKNOWN_RESULT_TYPE: Entry = Entry {
    code: "",
    title: "Unregistered result type",
    meaning: "The sender used a result type that is not in the IANA registry of RFC 8460 result \
              types, so its meaning is the sender's own.",
    likely_causes: &["A sender-specific or experimental failure category."],
    fix: &[
        "Read the failure-reason-code and additional-information of the report: they usually say what failed.",
        "If it is still unclear, ask the reporting organisation at the report's contact-info.",
    ],
    impact: Impact::Unknown,
    impact_note: "Unknown: treat like a certificate or TLS failure on the MX named.",
    registered: false,
};

static POLICY_TYPES: [Entry; 3] = [
    Entry {
        code: "sts",
        title: "MTA-STS policy",
        meaning: "The sender applied your MTA-STS policy (RFC 8461): it requires TLS with a valid \
                  certificate on the MX hosts the policy lists.",
        likely_causes: &[],
        fix: &[],
        impact: Impact::None,
        impact_note: "In `enforce` mode failing MX hosts get no mail; in `testing` mode failures are only reported.",
        registered: true,
    },
    Entry {
        code: "tlsa",
        title: "DANE (TLSA) policy",
        meaning: "The sender applied DANE (RFC 7672): your MX must present a certificate matching the \
                  TLSA records published in DNSSEC-signed DNS.",
        likely_causes: &[],
        fix: &[],
        impact: Impact::None,
        impact_note: "DANE is always enforced: a mismatch means no delivery to that MX.",
        registered: true,
    },
    Entry {
        code: "no-policy-found",
        title: "No policy found",
        meaning: "The sender found neither an MTA-STS policy nor DANE records for your domain, so it \
                  used TLS when offered but could not require it.",
        likely_causes: &[
            "The domain publishes a TLS-RPT record but no MTA-STS policy or DANE.",
            "The MTA-STS TXT record (`_mta-sts`) is missing, so the policy is never looked up.",
        ],
        fix: &[
            "Nothing is broken. To protect mail against downgrade attacks, publish an MTA-STS policy (start with `mode: testing`) or DANE.",
        ],
        impact: Impact::None,
        impact_note: "Mail is delivered; TLS is opportunistic, so an attacker could strip it.",
        registered: true,
    },
];

static UNKNOWN_POLICY_TYPE: Entry = Entry {
    code: "",
    title: "Unregistered policy type",
    meaning: "The sender reported a policy type other than sts, tlsa and no-policy-found, or none \
              at all; its meaning is the sender's own.",
    likely_causes: &["A sender-specific or malformed report."],
    fix: &[
        "Ask the reporting organisation at the report's contact-info what the policy type means.",
    ],
    impact: Impact::Unknown,
    impact_note: "Unknown.",
    registered: false,
};

/// The entry for a result type; unregistered types get the generic entry (its `code` is
/// empty: print the type as written next to it).
pub fn result_type_entry(result_type: &ResultType) -> &'static Entry {
    RESULT_TYPES
        .iter()
        .find(|e| e.code == result_type.as_str())
        .unwrap_or(&UNKNOWN_RESULT_TYPE)
}

/// The entry for a policy type; missing or unregistered types get the generic entry.
pub fn policy_type_entry(policy_type: Option<&PolicyType>) -> &'static Entry {
    policy_type
        .and_then(|t| POLICY_TYPES.iter().find(|e| e.code == t.as_str()))
        .unwrap_or(&UNKNOWN_POLICY_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_result_type_has_its_entry() {
        assert_eq!(ResultType::REGISTERED.len(), 11);
        for result_type in ResultType::REGISTERED {
            let entry = result_type_entry(result_type);
            assert_eq!(entry.code, result_type.as_str());
            assert!(entry.registered);
            assert!(!entry.title.is_empty() && !entry.meaning.is_empty());
            assert!(!entry.likely_causes.is_empty(), "{}", entry.code);
            assert!(!entry.fix.is_empty(), "{}", entry.code);
        }
    }

    #[test]
    fn every_policy_type_has_its_entry() {
        for policy_type in PolicyType::REGISTERED {
            let entry = policy_type_entry(Some(policy_type));
            assert_eq!(entry.code, policy_type.as_str());
            assert!(!entry.meaning.is_empty());
        }
    }

    #[test]
    fn unknown_types_get_the_generic_entry() {
        let entry = result_type_entry(&ResultType::parse("Testing"));
        assert!(!entry.registered);
        assert!(entry.meaning.contains("not in the IANA registry"));
        assert!(!policy_type_entry(Some(&PolicyType::parse("invalid-policy-type"))).registered);
        assert!(!policy_type_entry(None).registered);
    }
}
