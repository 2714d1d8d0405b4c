//! Delivering alerts: a JSON webhook (with a Slack-compatible `text`), a mail over SMTP, or
//! the log.
//!
//! The webhook body is the alert itself (the fields of [`AlertEvent`]) plus `text`, the
//! title and explanation as one message, which is what Slack and Mattermost incoming
//! webhooks read:
//!
//! ```json
//! {"text": "[critical] example.com: certificate-expired failures on mx1.example.com ...",
//!  "alert": {"incident_id": 3, "state": "firing", "at": "2025-02-01T03:00:00Z",
//!            "detector": "new-result-type", "severity": "critical",
//!            "policy_domain": "example.com", "title": "...", "text": "...", "sql": "...", ...}}
//! ```
//! A 2xx answer is a delivery; anything else is retried at the next pass.

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::alert::{AlertEvent, AlertState};
use crate::config::{MailTls, NotifierConfig, NotifierKind};

/// The message as one text: title, then the explanation and the query.
pub fn plain_text(event: &AlertEvent) -> String {
    let mut text = format!(
        "[{}] {}\n\n{}",
        event.severity.as_str(),
        event.title,
        event.text
    );
    if !event.sql.is_empty() {
        text.push_str("\n\nTo look deeper (tlsrpt sql):\n");
        text.push_str(&event.sql);
    }
    text
}

/// A notifier's `ca_file`, read at each delivery (alerts are rare, and a replaced file
/// takes effect without a restart).
fn read_ca_file(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|err| format!("cannot read {}: {err}", path.display()))
}

/// A client that trusts the certificates of a PEM file besides the system's roots.
fn client_trusting(path: &std::path::Path) -> Result<reqwest::Client, String> {
    let pem = read_ca_file(path)?;
    let mut builder = reqwest::Client::builder();
    for certificate in reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|err| format!("{} is not a PEM certificate file: {err}", path.display()))?
    {
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build()
        .map_err(|err| format!("cannot make an HTTPS client with {}: {err}", path.display()))
}

/// TLS towards an SMTP server named `host`: the system's roots, and those of `ca_file`.
fn tls_parameters(host: &str, ca_file: Option<&std::path::Path>) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(host.to_owned());
    if let Some(path) = ca_file {
        let pem = read_ca_file(path)?;
        let certificate = lettre::transport::smtp::client::Certificate::from_pem(&pem)
            .map_err(|err| format!("{} is not a PEM certificate file: {err}", path.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|err| format!("cannot set up TLS for {host}: {err}"))
}

/// Sends one alert through one notifier; the error says why it did not arrive.
pub async fn send(
    notifier: &NotifierConfig,
    event: &AlertEvent,
    http: &reqwest::Client,
) -> Result<(), String> {
    match &notifier.kind {
        NotifierKind::Log => {
            match event.state {
                AlertState::Firing => tracing::warn!(
                    notifier = %notifier.name,
                    incident = event.incident_id,
                    severity = event.severity.as_str(),
                    domain = %event.policy_domain,
                    detector = event.detector.as_str(),
                    "{}\n{}",
                    event.title,
                    event.text
                ),
                AlertState::Resolved => tracing::info!(
                    notifier = %notifier.name,
                    incident = event.incident_id,
                    domain = %event.policy_domain,
                    "{}",
                    event.title
                ),
            }
            Ok(())
        }
        NotifierKind::Webhook {
            url,
            timeout_seconds,
            ca_file,
        } => {
            let body = serde_json::json!({ "text": plain_text(event), "alert": event });
            // A notifier with a CA of its own gets a client of its own (alerts are rare).
            let own;
            let http = match ca_file {
                None => http,
                Some(path) => {
                    own = client_trusting(path)?;
                    &own
                }
            };
            let response = http
                .post(url)
                .timeout(Duration::from_secs(*timeout_seconds))
                .json(&body)
                .send()
                .await
                .map_err(|err| format!("POST {url}: {err}"))?;
            if response.status().is_success() {
                Ok(())
            } else {
                Err(format!(
                    "POST {url}: the server answered {}",
                    response.status()
                ))
            }
        }
        NotifierKind::Mail {
            smtp,
            from,
            to,
            timeout_seconds,
            tls,
            ca_file,
        } => {
            let (host, port) = match smtp.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .map_err(|_| format!("smtp = {smtp:?}: the port is not a number"))?,
                ),
                None => (smtp.as_str(), 25),
            };
            let mut message = Message::builder()
                .from(
                    from.parse()
                        .map_err(|err| format!("from = {from:?}: {err}"))?,
                )
                .subject(format!(
                    "[tlsrpt {}] {}",
                    event.severity.as_str(),
                    event.title
                ))
                .header(ContentType::TEXT_PLAIN);
            for address in to {
                message = message.to(address
                    .parse()
                    .map_err(|err| format!("to = {address:?}: {err}"))?);
            }
            let message = message
                .body(plain_text(event))
                .map_err(|err| format!("cannot build the mail: {err}"))?;
            let tls = match tls {
                MailTls::None => Tls::None,
                MailTls::Starttls => Tls::Required(tls_parameters(host, ca_file.as_deref())?),
                MailTls::Tls => Tls::Wrapper(tls_parameters(host, ca_file.as_deref())?),
            };
            let transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(port)
                .tls(tls)
                .timeout(Some(Duration::from_secs(*timeout_seconds)))
                .build();
            transport
                .send(message)
                .await
                .map(drop)
                .map_err(|err| format!("SMTP {smtp}: {err}"))
        }
    }
}
