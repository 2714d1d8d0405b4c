//! The SMTP receiver: reports mailed to the `mailto:` reporting address (RFC 8460 §5.3.1).
//!
//! A sender hears 250 only once the report is durable on the bus. Every other answer says
//! what its operator can do:
//! - `250 2.0.0` with the `report_uid`: accepted and durable;
//! - `550 5.6.0`: no report in the message, or a malformed one (the decoder's message, with
//!   the JSON path of the problem);
//! - `552 5.3.4`: over the message size cap, announced with `SIZE=` at `MAIL` (refused at
//!   once) or counted while reading (refused after the final dot; never more than the cap is
//!   held in memory), or a report over the decompressed cap;
//! - `550 5.7.20`: with [`DkimPolicy::Enforce`], no DKIM signature or none that verifies
//!   (RFC 7372 "No passing DKIM signature found" covers both; the reply text says which);
//! - `451 4.3.0`: the bus cannot take the report now, or the refusal could not be recorded;
//!   `451 4.4.3`: with `Enforce`, a DKIM key lookup failed for a reason that may pass. The
//!   sender retries, as RFC 8460 expects; nothing is dead-lettered for a 451;
//! - `550 5.1.1`: a recipient this receiver is not configured for;
//! - `421`: too many connections, a client too slow (per command, and for the whole `DATA`
//!   transfer), too many bad commands, or the receiver stopping.
//!
//! Every refused message (all but 451) is kept byte for byte in the dead-letter area
//! ([`tlsrpt_bus::dead_letter`]) before the answer is sent. One message's failure never ends
//! the connection, and one connection's failure (a panic included) never stops the server.
//!
//! Why the protocol is written here: the maintained Rust SMTP servers are whole mail servers
//! (Stalwart's `smtp`); the embeddable ones are blocking (`mailin-embedded`), unmaintained
//! (`samotop`, `tokio-smtp`), or hand the message over a channel after they have already
//! answered (`minismtp`), which would break "250 only when durable". What a report receiver
//! needs of RFC 5321 is small: the commands below, `SIZE` (RFC 1870), `8BITMIME`,
//! `PIPELINING` (RFC 2920) and `ENHANCEDSTATUSCODES` (RFC 2034).
//!
//! STARTTLS (RFC 3207) is the extension point: advertise it in `Session::ehlo`, and on the
//! command answer 220, discard the read buffer, rejoin the halves
//! (`ReadHalf::unsplit`), run the TLS acceptor over the stream and call
//! `SmtpReceiver::converse` again on the TLS stream with a fresh `Session` (the
//! conversation is generic over the stream for that reason).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tlsrpt_bus::dead_letter::{DeadLetters, Rejection};
use tlsrpt_bus::{BusError, Producer};
use tlsrpt_schemas::{
    DecodeOptions, DkimOutcome, Envelope, ReceivedReport, StatusClass, Transport,
};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::dkim::{DkimVerdict, DkimVerifier};
use crate::metrics::Metrics;
use crate::publish::{decode, message_for, sha256_hex};

/// The longest command line read, CRLF included. RFC 5321 §4.5.3.1.4 says 512 octets, and
/// extensions may add to it; real clients stay well below this.
const MAX_COMMAND_LINE_BYTES: usize = 2048;

/// The most recipients of one transaction (RFC 5321 §4.5.3.1.8 asks for at least 100).
const MAX_RECIPIENTS: usize = 100;

/// Bad commands (unknown, malformed, out of sequence) tolerated on one connection before it
/// is closed: a client that speaks another protocol must not hold a slot until it times out.
/// Postfix's `smtpd_hard_error_limit` is the same.
const MAX_BAD_COMMANDS: u32 = 20;

/// The most characters of a reply's text (a reply line is at most 512 octets).
const MAX_REPLY_TEXT: usize = 400;

/// What is done with the DKIM outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DkimPolicy {
    /// Record it (`dkim` column) and accept either way: real senders' keys vary.
    #[default]
    Record,
    /// Refuse unsigned mail and mail whose signatures all fail, as RFC 8460 allows a strict
    /// receiver to.
    Enforce,
}

/// Settings of the SMTP receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpOptions {
    /// The name in the greeting and in replies.
    pub hostname: String,
    /// The largest message accepted, as transferred (after dot-unstuffing), in bytes
    /// (default 10 MiB); announced in the EHLO `SIZE` line.
    pub max_message_bytes: usize,
    /// The addresses mail is accepted for, compared without regard to case; `None` accepts
    /// any (the default, meant for a receiver on loopback behind a mail server).
    pub recipients: Option<Vec<String>>,
    pub dkim: DkimPolicy,
    /// How long a client may take to send a command (default 5 minutes, RFC 5321 §4.5.3.2).
    pub command_timeout: Duration,
    /// How long a client may take to send a whole message after `354` (default 10 minutes).
    pub data_timeout: Duration,
    /// The most connections open at once; more get `421 4.3.2` and are closed.
    pub max_connections: usize,
    /// At shutdown, how long connections in a transaction get to finish it.
    pub drain_timeout: Duration,
    /// The decoder's limits (the decompressed cap).
    pub decode: DecodeOptions,
}

impl Default for SmtpOptions {
    fn default() -> Self {
        Self {
            hostname: "localhost".to_owned(),
            max_message_bytes: 10 << 20,
            recipients: None,
            dkim: DkimPolicy::Record,
            command_timeout: Duration::from_secs(5 * 60),
            data_timeout: Duration::from_secs(10 * 60),
            max_connections: 256,
            drain_timeout: Duration::from_secs(30),
            decode: DecodeOptions::default(),
        }
    }
}

/// The SMTP receiver: what its connections share.
#[derive(Debug)]
pub struct SmtpReceiver<P> {
    producer: P,
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    verifier: DkimVerifier,
    /// `options.recipients`, lower-cased and without angle brackets.
    recipients: Option<Vec<String>>,
    options: SmtpOptions,
}

/// One SMTP reply: a code and the text after it (the enhanced status code included).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn new(code: u16, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
        }
    }

    /// The reply as one line on the wire. The text may quote the sender's input (a decoder
    /// message, an address): it is cut short and kept to printable ASCII, so it can neither
    /// break the reply into lines nor grow without bound.
    fn line(&self) -> String {
        let mut text: String = self
            .text
            .chars()
            .map(|c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .take(MAX_REPLY_TEXT)
            .collect();
        if self.text.chars().count() > MAX_REPLY_TEXT {
            text.push_str("...");
        }
        format!("{} {text}\r\n", self.code)
    }
}

/// The state of one connection (RFC 5321 §4.1.4): the client's greeting, and the mail
/// transaction under way.
#[derive(Debug, Default)]
struct Session {
    helo: Option<String>,
    mail_from: Option<String>,
    recipients: Vec<String>,
    bad_commands: u32,
}

impl Session {
    fn reset_transaction(&mut self) {
        self.mail_from = None;
        self.recipients.clear();
    }

    /// The EHLO reply's extension lines (a STARTTLS line would join them).
    fn ehlo(options: &SmtpOptions, client: &str) -> String {
        let host = &options.hostname;
        let client: String = client
            .chars()
            .filter(char::is_ascii_graphic)
            .take(100)
            .collect();
        format!(
            "250-{host} greets {client}\r\n250-SIZE {}\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n",
            options.max_message_bytes
        )
    }
}

/// How a conversation ended.
enum Ended {
    /// QUIT, or the server closed it (timeout, too many errors, shutdown, busy).
    Done,
    /// The client went away or the socket failed.
    Dropped,
}

/// One line read from the client.
enum Line {
    Complete(Vec<u8>),
    TooLong,
    Closed,
}

impl<P: Producer> SmtpReceiver<P> {
    pub fn new(
        producer: P,
        dead_letters: Arc<DeadLetters>,
        metrics: Arc<Metrics>,
        verifier: DkimVerifier,
        options: SmtpOptions,
    ) -> Arc<Self> {
        let recipients = options.recipients.as_ref().map(|list| {
            list.iter()
                .map(|address| normalise_address(address))
                .collect()
        });
        Arc::new(Self {
            producer,
            dead_letters,
            metrics,
            verifier,
            recipients,
            options,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Serves on `listener` until `shutdown` resolves; then stops accepting, answers 421 to
    /// connections waiting for a command, lets those in a transaction finish it (for at most
    /// `drain_timeout`), and returns.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let local = listener.local_addr()?;
        if self.recipients.is_none() && !local.ip().is_loopback() {
            tracing::warn!(
                %local,
                "The SMTP receiver accepts mail for any recipient on a non-loopback address; configure the reporting addresses."
            );
        }
        let slots = Arc::new(Semaphore::new(self.options.max_connections.max(1)));
        let (stop, stopping) = watch::channel(false);
        // Connections are owned here: a panic in one is reported by `join_next` and ends
        // only that connection; dropping the set at the end aborts stragglers.
        let mut connections = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                Some(finished) = connections.join_next() => {
                    if let Err(err) = finished
                        && err.is_panic()
                    {
                        tracing::error!("An SMTP connection panicked: {err}");
                    }
                }
                accepted = listener.accept() => {
                    let (stream, remote) = match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            // Out of file descriptors and the like: pause rather than spin.
                            tracing::warn!("SMTP accept failed: {err}");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        self.metrics.refused(Transport::Smtp, "busy");
                        // A fresh socket's send buffer is empty: this never blocks.
                        let reply = Reply::new(
                            421,
                            format!("4.3.2 {} Too many connections; try again later", self.options.hostname),
                        );
                        let _ = stream.try_write(reply.line().as_bytes());
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let receiver = Arc::clone(&self);
                    let stopping = stopping.clone();
                    connections.spawn(async move {
                        receiver.converse(stream, remote, stopping, slot).await;
                    });
                }
            }
        }
        drop(listener);
        let _ = stop.send(true);
        let drain = async { while connections.join_next().await.is_some() {} };
        if tokio::time::timeout(self.options.drain_timeout, drain)
            .await
            .is_err()
        {
            tracing::warn!(
                open = connections.len(),
                "SMTP connections still open after the drain timeout are closed."
            );
            connections.shutdown().await;
        }
        Ok(())
    }

    /// One connection, from the greeting to QUIT (or a timeout, or the client leaving).
    /// `slot` is released before the socket closes, so a client that sees the connection end
    /// can count on its slot being free.
    async fn converse<S>(
        &self,
        stream: S,
        remote: SocketAddr,
        mut stopping: watch::Receiver<bool>,
        slot: OwnedSemaphorePermit,
    ) where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (read, mut writer) = tokio::io::split(stream);
        let mut reader = BufReader::with_capacity(16 << 10, read);
        let mut out = Vec::with_capacity(512);
        let mut session = Session::default();
        let greeting = Reply::new(220, format!("{} ESMTP tlsrpt", self.options.hostname));
        out.extend_from_slice(greeting.line().as_bytes());
        let ended = self
            .commands(
                &mut reader,
                &mut writer,
                &mut out,
                &mut session,
                remote,
                &mut stopping,
            )
            .await;
        if matches!(ended, Ended::Done) {
            let _ = writer.write_all(&out).await;
            let _ = writer.flush().await;
        }
        drop(slot);
        let _ = writer.shutdown().await;
    }

    /// The command loop. Replies collect in `out` and are written when no further complete
    /// command is waiting in the read buffer: a pipelining client (RFC 2920) gets its replies
    /// in one write, and a client waiting for a reply always gets it.
    async fn commands<R, W>(
        &self,
        reader: &mut BufReader<R>,
        writer: &mut W,
        out: &mut Vec<u8>,
        session: &mut Session,
        remote: SocketAddr,
        stopping: &mut watch::Receiver<bool>,
    ) -> Ended
    where
        R: AsyncRead + Send + Unpin,
        W: AsyncWrite + Send + Unpin,
    {
        let host = self.options.hostname.clone();
        loop {
            if !reader.buffer().contains(&b'\n') && !out.is_empty() {
                if writer.write_all(out).await.is_err() || writer.flush().await.is_err() {
                    return Ended::Dropped;
                }
                out.clear();
            }
            if *stopping.borrow_and_update() {
                out.extend_from_slice(
                    Reply::new(421, format!("4.3.2 {host} Service shutting down"))
                        .line()
                        .as_bytes(),
                );
                return Ended::Done;
            }
            let read = tokio::time::timeout(
                self.options.command_timeout,
                read_line(reader, MAX_COMMAND_LINE_BYTES),
            );
            let line = tokio::select! {
                line = read => line,
                // Changed, or the server is gone: either way, stop at the top of the loop.
                _ = stopping.changed() => {
                    out.extend_from_slice(
                        Reply::new(421, format!("4.3.2 {host} Service shutting down")).line().as_bytes(),
                    );
                    return Ended::Done;
                }
            };
            let line = match line {
                Err(_elapsed) => {
                    out.extend_from_slice(
                        Reply::new(421, format!("4.4.2 {host} Timeout waiting for a command"))
                            .line()
                            .as_bytes(),
                    );
                    return Ended::Done;
                }
                Ok(Err(_)) | Ok(Ok(Line::Closed)) => return Ended::Dropped,
                Ok(Ok(Line::TooLong)) => {
                    session.bad_commands += 1;
                    Err(Reply::new(500, "5.5.2 Line too long"))
                }
                Ok(Ok(Line::Complete(line))) => Ok(line),
            };
            let reply = match line {
                Err(reply) => reply,
                Ok(line) => {
                    let line = String::from_utf8_lossy(&line);
                    let line = line.trim_end_matches(['\r', '\n']);
                    let (verb, args) = match line.split_once(' ') {
                        Some((verb, args)) => (verb, args.trim()),
                        None => (line, ""),
                    };
                    let verb = verb.to_ascii_uppercase();
                    match verb.as_str() {
                        "EHLO" | "HELO" if args.is_empty() => {
                            Reply::new(501, format!("5.5.4 Syntax: {verb} hostname"))
                        }
                        "EHLO" => {
                            session.helo = Some(args.to_owned());
                            session.reset_transaction();
                            out.extend_from_slice(Session::ehlo(&self.options, args).as_bytes());
                            continue;
                        }
                        "HELO" => {
                            session.helo = Some(args.to_owned());
                            session.reset_transaction();
                            Reply::new(250, host.clone())
                        }
                        "MAIL" => self.mail(session, args),
                        "RCPT" => self.rcpt(session, args),
                        "DATA" if !args.is_empty() => Reply::new(501, "5.5.4 Syntax: DATA"),
                        "DATA" if session.mail_from.is_none() => {
                            Reply::new(503, "5.5.1 Error: need MAIL command")
                        }
                        "DATA" if session.recipients.is_empty() => {
                            Reply::new(503, "5.5.1 Error: need RCPT command")
                        }
                        "DATA" => {
                            out.extend_from_slice(
                                Reply::new(354, "End data with <CR><LF>.<CR><LF>")
                                    .line()
                                    .as_bytes(),
                            );
                            if writer.write_all(out).await.is_err() || writer.flush().await.is_err()
                            {
                                return Ended::Dropped;
                            }
                            out.clear();
                            let reply = match self.data(reader, remote).await {
                                Ok(reply) => reply,
                                Err(ended) => {
                                    if matches!(ended, Ended::Done) {
                                        out.extend_from_slice(
                                            Reply::new(
                                                421,
                                                format!(
                                                    "4.4.2 {host} Timeout: the message did not arrive within {:?}",
                                                    self.options.data_timeout
                                                ),
                                            )
                                            .line()
                                            .as_bytes(),
                                        );
                                    }
                                    return ended;
                                }
                            };
                            session.reset_transaction();
                            reply
                        }
                        "RSET" => {
                            session.reset_transaction();
                            Reply::new(250, "2.0.0 OK")
                        }
                        "NOOP" => Reply::new(250, "2.0.0 OK"),
                        "QUIT" => {
                            out.extend_from_slice(
                                Reply::new(221, format!("2.0.0 {host} closing connection"))
                                    .line()
                                    .as_bytes(),
                            );
                            return Ended::Done;
                        }
                        "VRFY" => Reply::new(
                            252,
                            "2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
                        ),
                        "HELP" => Reply::new(
                            214,
                            "2.0.0 This receiver takes TLS reports (RFC 8460). Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
                        ),
                        "EXPN" | "STARTTLS" | "AUTH" | "BDAT" | "ETRN" | "TURN" | "SEND"
                        | "SOML" | "SAML" => Reply::new(502, "5.5.1 Command not implemented"),
                        _ => {
                            session.bad_commands += 1;
                            Reply::new(500, "5.5.2 Command not recognized")
                        }
                    }
                }
            };
            if reply.code == 503 || reply.code == 501 {
                session.bad_commands += 1;
            }
            out.extend_from_slice(reply.line().as_bytes());
            if session.bad_commands > MAX_BAD_COMMANDS {
                out.extend_from_slice(
                    Reply::new(421, format!("4.7.0 {host} Too many errors; closing"))
                        .line()
                        .as_bytes(),
                );
                return Ended::Done;
            }
        }
    }

    /// `MAIL FROM:<path> [SIZE=n] [BODY=7BIT|8BITMIME]`
    fn mail(&self, session: &mut Session, args: &str) -> Reply {
        if session.helo.is_none() {
            return Reply::new(503, "5.5.1 Error: send HELO/EHLO first");
        }
        if session.mail_from.is_some() {
            return Reply::new(503, "5.5.1 Error: nested MAIL command");
        }
        let Some((path, params)) = parse_path(args, "FROM:") else {
            return Reply::new(501, "5.5.4 Syntax: MAIL FROM:<address>");
        };
        for (key, value) in params {
            match (key.to_ascii_uppercase().as_str(), value) {
                ("SIZE", Some(value)) => {
                    let Ok(size) = value.parse::<u64>() else {
                        return Reply::new(501, "5.5.4 Syntax: SIZE=<number of bytes>");
                    };
                    if size > self.options.max_message_bytes as u64 {
                        self.metrics.refused(Transport::Smtp, "too_large");
                        return Reply::new(
                            552,
                            format!(
                                "5.3.4 Message size exceeds the limit of {} bytes",
                                self.options.max_message_bytes
                            ),
                        );
                    }
                }
                ("BODY", Some(value))
                    if value.eq_ignore_ascii_case("7BIT")
                        || value.eq_ignore_ascii_case("8BITMIME") => {}
                _ => return Reply::new(555, "5.5.4 Unsupported MAIL parameter"),
            }
        }
        session.mail_from = Some(path.to_owned());
        Reply::new(250, "2.1.0 OK")
    }

    /// `RCPT TO:<address>`
    fn rcpt(&self, session: &mut Session, args: &str) -> Reply {
        if session.mail_from.is_none() {
            return Reply::new(503, "5.5.1 Error: need MAIL command");
        }
        let Some((path, params)) = parse_path(args, "TO:") else {
            return Reply::new(501, "5.5.4 Syntax: RCPT TO:<address>");
        };
        if path.is_empty() {
            return Reply::new(501, "5.1.3 Bad recipient address syntax");
        }
        if !params.is_empty() {
            return Reply::new(555, "5.5.4 Unsupported RCPT parameter");
        }
        if session.recipients.len() >= MAX_RECIPIENTS {
            return Reply::new(452, "4.5.3 Too many recipients");
        }
        let address = normalise_address(path);
        if let Some(accepted) = &self.recipients
            && !accepted.contains(&address)
        {
            self.metrics.refused(Transport::Smtp, "unknown_recipient");
            return Reply::new(
                550,
                format!("5.1.1 <{path}>: this address does not take TLS reports here"),
            );
        }
        session.recipients.push(address);
        Reply::new(250, "2.1.5 OK")
    }

    /// Reads the message after 354 and answers it. `Err` ends the connection: the client
    /// went away (`Dropped`) or took longer than `data_timeout` (`Done`, with a 421).
    async fn data<R>(&self, reader: &mut BufReader<R>, remote: SocketAddr) -> Result<Reply, Ended>
    where
        R: AsyncRead + Send + Unpin,
    {
        let mut message = Unstuffer::new(self.options.max_message_bytes);
        match tokio::time::timeout(self.options.data_timeout, read_data(reader, &mut message)).await
        {
            Err(_elapsed) => {
                self.metrics.refused(Transport::Smtp, "timeout");
                // An incomplete transfer: the sender retries after the 421, nothing to keep.
                return Err(Ended::Done);
            }
            Ok(Ok(true)) => {}
            Ok(Ok(false)) | Ok(Err(_)) => return Err(Ended::Dropped),
        }
        Ok(self.deliver(message, remote).await)
    }

    /// Decodes, verifies and publishes one complete message; the reply to its final dot.
    async fn deliver(&self, message: Unstuffer, remote: SocketAddr) -> Reply {
        let received_at = Utc::now();
        let total = message.total;
        let over_cap = message.over_cap();
        let bytes = message.kept;
        self.metrics.received(Transport::Smtp, total);
        let refusal = Refusal {
            received_at,
            remote,
            total,
        };

        if over_cap {
            let text = format!(
                "5.3.4 Message size exceeds the limit of {} bytes",
                self.options.max_message_bytes
            );
            return self
                .refuse(
                    &refusal,
                    "too_large",
                    Reply::new(552, text),
                    None,
                    bytes,
                    false,
                )
                .await;
        }

        // Decompression is CPU work on up to the decompressed cap: off the async threads.
        // A panic in the decoder loses this message's bytes, so it is answered 451.
        let options = self.options.decode;
        let decoded = tokio::task::spawn_blocking(move || {
            let decoded = decode(options, &bytes);
            (bytes, decoded)
        })
        .await;
        let (bytes, decoded) = match decoded {
            Ok(done) => done,
            Err(err) => {
                tracing::error!(%remote, "Decoding a mailed report failed: {err}");
                return Reply::new(
                    451,
                    "4.3.0 Local error while reading the message; try again later",
                );
            }
        };
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(err) => {
                let reply = match err.status_class() {
                    StatusClass::TooLarge => Reply::new(552, format!("5.3.4 {err}")),
                    StatusClass::Malformed | StatusClass::NotAReport => {
                        Reply::new(550, format!("5.6.0 {err}"))
                    }
                };
                let path = err.path().map(str::to_owned);
                return self
                    .refuse(&refusal, err.code(), reply, path, bytes, true)
                    .await;
            }
        };

        let verdict = self.verifier.verify(&bytes).await;
        if self.options.dkim == DkimPolicy::Enforce
            && let Some(reply) = self.enforce(&verdict)
        {
            let code = match verdict.outcome {
                DkimOutcome::None => "dkim_none",
                _ if reply.code == 451 => "dkim_temporary",
                _ => "dkim_fail",
            };
            if reply.code == 451 {
                self.metrics.refused(Transport::Smtp, code);
                return reply;
            }
            return self.refuse(&refusal, code, reply, None, bytes, true).await;
        }

        let received = ReceivedReport {
            envelope: Envelope {
                transport: Transport::Smtp,
                received_at,
                submitter_header: decoded.email.and_then(|headers| headers.report_submitter),
                dkim: Some(verdict.outcome),
            },
            report: decoded.decoded.report,
            raw_json: decoded.decoded.raw_json.into(),
        };
        let (bus_message, report_uid) = message_for(&received, Some(remote), &sha256_hex(&bytes));
        let sent_at = Instant::now();
        match self.producer.send(bus_message).await {
            Ok(delivered) => {
                self.metrics
                    .accepted(Transport::Smtp, received.raw_json.len(), sent_at.elapsed());
                tracing::info!(
                    %remote,
                    %report_uid,
                    partition = delivered.partition,
                    offset = delivered.offset,
                    dkim = verdict.outcome.as_str(),
                    "Mailed report accepted."
                );
                Reply::new(250, format!("2.0.0 OK: report {report_uid} accepted"))
            }
            Err(err @ BusError::TooLarge { .. }) => {
                let reply = Reply::new(552, format!("5.3.4 {err}"));
                self.refuse(&refusal, "too_large_for_bus", reply, None, bytes, true)
                    .await
            }
            Err(err) => {
                self.metrics.refused(Transport::Smtp, "bus_unavailable");
                if !matches!(
                    err,
                    BusError::Storage(_) | BusError::Closed | BusError::Locked { .. }
                ) {
                    tracing::error!(%remote, "The bus refused a mailed report: {err}");
                }
                // Whatever the bus says, the report itself was fine: the sender retries.
                Reply::new(451, format!("4.3.0 {err}; try again later"))
            }
        }
    }

    /// The refusal DKIM enforcement calls for, if any.
    fn enforce(&self, verdict: &DkimVerdict) -> Option<Reply> {
        let reason = verdict.reason.as_deref().unwrap_or("no signature verified");
        match verdict.outcome {
            DkimOutcome::Pass => None,
            DkimOutcome::None => Some(Reply::new(
                550,
                "5.7.20 No DKIM signature; this receiver takes only DKIM-signed reports (RFC 8460)",
            )),
            DkimOutcome::Fail if verdict.temporary => Some(Reply::new(
                451,
                format!("4.4.3 DKIM could not be checked now ({reason}); try again later"),
            )),
            DkimOutcome::Fail => Some(Reply::new(
                550,
                format!("5.7.20 No passing DKIM signature ({reason})"),
            )),
        }
    }

    /// Keeps a refused message in the dead-letter area, then gives `reply`; when it cannot
    /// be kept, 451 instead, so that the sender retries and nothing is lost.
    async fn refuse(
        &self,
        refusal: &Refusal,
        code: &str,
        reply: Reply,
        path: Option<String>,
        bytes: Vec<u8>,
        complete: bool,
    ) -> Reply {
        self.metrics.refused(Transport::Smtp, code);
        let rejection = Rejection {
            received_at: refusal.received_at,
            transport: Transport::Smtp.as_str().to_owned(),
            remote_addr: Some(refusal.remote.to_string()),
            code: code.to_owned(),
            message: reply.text.clone(),
            path,
            bytes: refusal.total,
            complete,
            sha256: sha256_hex(&bytes),
        };
        let dead_letters = Arc::clone(&self.dead_letters);
        let kept = tokio::task::spawn_blocking(move || dead_letters.keep(&bytes, &rejection))
            .await
            .map_err(std::io::Error::other)
            .and_then(|kept| kept);
        match kept {
            Ok(id) => {
                tracing::info!(remote = %refusal.remote, %code, %id, "Mailed input refused and kept.");
                reply
            }
            Err(err) => {
                tracing::error!(remote = %refusal.remote, "Cannot keep a refused message: {err}");
                Reply::new(
                    451,
                    "4.3.0 Cannot record the refusal of this message; try again later",
                )
            }
        }
    }
}

/// What every refusal of one message records.
struct Refusal {
    received_at: DateTime<Utc>,
    remote: SocketAddr,
    total: usize,
}

/// An address as compared with the configured recipients: without angle brackets or a
/// source route (`<@relay:user@host>`), lower-cased.
fn normalise_address(address: &str) -> String {
    let address = address.trim();
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    let address = match address.split_once(':') {
        Some((route, mailbox)) if route.starts_with('@') => mailbox,
        _ => address,
    };
    address.to_ascii_lowercase()
}

/// A `MAIL` or `RCPT` parameter: `KEY=value`, or a bare `KEY`.
type Parameter<'a> = (&'a str, Option<&'a str>);

/// Splits `FROM:<path> PARAM=value ...` (or `TO:...`) into the path, without brackets, and
/// its parameters. Lenient where real clients are sloppy (a space after the colon, a path
/// without brackets); `None` when the keyword or the path is missing or the path is not
/// printable.
fn parse_path<'a>(args: &'a str, keyword: &str) -> Option<(&'a str, Vec<Parameter<'a>>)> {
    let head = args.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let rest = args[keyword.len()..].trim_start();
    let (path, rest) = if let Some(inner) = rest.strip_prefix('<') {
        let end = inner.find('>')?;
        (&inner[..end], &inner[end + 1..])
    } else {
        let end = rest.find(' ').unwrap_or(rest.len());
        if end == 0 {
            return None;
        }
        (&rest[..end], &rest[end..])
    };
    if path.len() > 256 || !path.chars().all(|c| c.is_ascii_graphic() || !c.is_ascii()) {
        return None;
    }
    if !rest.is_empty() && !rest.starts_with(' ') {
        return None;
    }
    let params = rest
        .split_whitespace()
        .map(|param| match param.split_once('=') {
            Some((key, value)) => (key, Some(value)),
            None => (param, None),
        })
        .collect();
    Some((path, params))
}

/// Reads one line (up to and including `\n`) of at most `limit` bytes. A longer line is read
/// to its end and dropped.
async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R, limit: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(Line::Closed);
        }
        let (chunk, complete) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (&buffer[..=end], true),
            None => (buffer, false),
        };
        if !too_long {
            if line.len() + chunk.len() > limit {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = chunk.len();
        reader.consume(used);
        if complete {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Complete(line)
            });
        }
    }
}

/// Reads the message into `message` up to and including the final `.` line. `Ok(false)`
/// when the client closed the connection first.
async fn read_data<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    message: &mut Unstuffer,
) -> std::io::Result<bool> {
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(false);
        }
        match message.feed(buffer) {
            Some(used) => {
                reader.consume(used);
                return Ok(true);
            }
            None => {
                let used = buffer.len();
                reader.consume(used);
            }
        }
    }
}

/// Where the data reader is in the current line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataState {
    /// After CRLF (or at the start of the data).
    LineStart,
    /// A `.` began the line and was dropped: transparency or the end.
    Dot,
    /// `.` and CR began the line: the end, if LF follows.
    DotCr,
    Middle,
    /// The last byte was CR.
    Cr,
}

/// The message after `354`: dot-unstuffing (RFC 5321 §4.5.2) and the size cap, fed in
/// whatever pieces the socket delivers.
///
/// Only CRLF ends a line. A bare LF is data, so `<LF>.<LF>` or `<LF>.<CR><LF>` never end the
/// message: the ambiguity behind "SMTP smuggling" does not exist here.
#[derive(Debug)]
struct Unstuffer {
    state: DataState,
    /// The message, up to `cap` bytes.
    kept: Vec<u8>,
    /// Bytes of message seen, kept or not.
    total: usize,
    cap: usize,
}

impl Unstuffer {
    fn new(cap: usize) -> Self {
        Self {
            state: DataState::LineStart,
            kept: Vec::new(),
            total: 0,
            cap,
        }
    }

    fn over_cap(&self) -> bool {
        self.total > self.cap
    }

    fn emit(&mut self, bytes: &[u8]) {
        self.total += bytes.len();
        let take = self.cap.saturating_sub(self.kept.len()).min(bytes.len());
        let needed = self.kept.len() + take;
        if needed > self.kept.capacity() {
            // Grow by doubling as usual, but never past the cap: a message at the cap must
            // not hold (up to) twice the cap in memory.
            let target = needed.max(self.kept.capacity() * 2).min(self.cap);
            self.kept.reserve_exact(target - self.kept.len());
        }
        self.kept.extend_from_slice(&bytes[..take]);
    }

    /// Takes `chunk`; `Some(n)` when the final `.` line ended at `chunk[n - 1]` (the bytes
    /// after it belong to the next command), `None` when all of it was message.
    fn feed(&mut self, chunk: &[u8]) -> Option<usize> {
        let mut at = 0;
        while at < chunk.len() {
            match self.state {
                DataState::Middle => match chunk[at..].iter().position(|&b| b == b'\r') {
                    None => {
                        self.emit(&chunk[at..]);
                        return None;
                    }
                    Some(cr) => {
                        self.emit(&chunk[at..=at + cr]);
                        at += cr + 1;
                        self.state = DataState::Cr;
                    }
                },
                DataState::Cr => {
                    let byte = chunk[at];
                    at += 1;
                    self.emit(&[byte]);
                    self.state = match byte {
                        b'\n' => DataState::LineStart,
                        b'\r' => DataState::Cr,
                        _ => DataState::Middle,
                    };
                }
                DataState::LineStart => {
                    let byte = chunk[at];
                    at += 1;
                    if byte == b'.' {
                        self.state = DataState::Dot;
                    } else {
                        self.emit(&[byte]);
                        self.state = if byte == b'\r' {
                            DataState::Cr
                        } else {
                            DataState::Middle
                        };
                    }
                }
                DataState::Dot => {
                    let byte = chunk[at];
                    at += 1;
                    if byte == b'\r' {
                        self.state = DataState::DotCr;
                    } else {
                        self.emit(&[byte]);
                        self.state = DataState::Middle;
                    }
                }
                DataState::DotCr => {
                    if chunk[at] == b'\n' {
                        return Some(at + 1);
                    }
                    // `.` CR and something else: the dot was transparency, the CR is data,
                    // and this byte is read again as the one after a CR.
                    self.emit(b"\r");
                    self.state = DataState::Cr;
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` split at every position; each time the message and the bytes used.
    fn unstuff_every_split(wire: &[u8], cap: usize) -> Vec<(Vec<u8>, usize, Option<usize>)> {
        let mut out = Vec::new();
        for split in 0..=wire.len() {
            let mut message = Unstuffer::new(cap);
            let first = message.feed(&wire[..split]);
            let used = match first {
                Some(n) => Some(n),
                None => message.feed(&wire[split..]).map(|n| n + split),
            };
            out.push((message.kept, message.total, used));
        }
        out
    }

    #[test]
    fn dot_unstuffing_and_the_end_at_any_split() {
        let wire = b"..leading dot\r\n.\r\r\nx\n.\nbare LF is data\r\n...\r\n.\r\nQUIT\r\n";
        let message = b".leading dot\r\n\r\r\nx\n.\nbare LF is data\r\n..\r\n";
        for (kept, total, used) in unstuff_every_split(wire, 1 << 20) {
            assert_eq!(kept, message, "{}", String::from_utf8_lossy(&kept));
            assert_eq!(total, message.len());
            assert_eq!(used, Some(wire.len() - b"QUIT\r\n".len()));
        }
    }

    #[test]
    fn an_empty_message_ends_at_once_and_an_unfinished_one_does_not() {
        assert_eq!(Unstuffer::new(10).feed(b".\r\nNOOP\r\n"), Some(3));
        let mut message = Unstuffer::new(10);
        // `.` LF is not the end; the leading dot goes, as transparency says it must.
        assert_eq!(message.feed(b"abc\r\n.\n"), None);
        assert_eq!(message.feed(b"\r\n.\r"), None);
        assert_eq!(message.feed(b"\n"), Some(1));
        assert_eq!(message.kept, b"abc\r\n\n\r\n");
    }

    #[test]
    fn the_cap_keeps_a_prefix_and_counts_the_rest() {
        let wire = b"0123456789abcdef\r\n.\r\n";
        for (kept, total, used) in unstuff_every_split(wire, 10) {
            assert_eq!(kept, b"0123456789");
            assert_eq!(kept.capacity(), 10);
            assert_eq!(total, 18);
            assert_eq!(used, Some(wire.len()));
        }
    }

    #[test]
    fn paths_and_parameters() {
        assert_eq!(
            parse_path("FROM:<a@b.example> SIZE=10 BODY=8BITMIME", "FROM:"),
            Some((
                "a@b.example",
                vec![("SIZE", Some("10")), ("BODY", Some("8BITMIME"))]
            ))
        );
        assert_eq!(parse_path("from: <>", "FROM:"), Some(("", vec![])));
        assert_eq!(parse_path("TO:x@y", "TO:"), Some(("x@y", vec![])));
        assert_eq!(parse_path("TO:<x@y", "TO:"), None);
        assert_eq!(parse_path("TO:", "TO:"), None);
        assert_eq!(parse_path("<x@y>", "TO:"), None);
        assert_eq!(parse_path("TO:<x@y>junk", "TO:"), None);
        assert_eq!(
            normalise_address("<@relay.example:Rua@Example.COM>"),
            "rua@example.com"
        );
    }

    #[test]
    fn replies_quote_input_as_one_short_printable_line() {
        let reply = Reply::new(550, format!("5.6.0 bad\r\n250 fake {}", "x".repeat(1000)));
        let line = reply.line();
        assert!(line.starts_with("550 5.6.0 bad??250 fake xxx"), "{line}");
        assert!(line.ends_with("...\r\n"));
        assert_eq!(line.matches("\r\n").count(), 1);
        assert!(line.len() < 512);
    }
}
