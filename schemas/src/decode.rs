//! From received bytes to report JSON: sniffing, decompression with a hard cap, and parsing.
//!
//! Senders' declared content types are unreliable (`+gzip` parts holding plain JSON,
//! `octet-stream`, zip archives), so the bytes decide: gzip magic, zip magic, a JSON object,
//! or base64 text around one of those.
//!
//! Decompression stops as soon as the output passes [`DecodeOptions::max_decompressed_bytes`],
//! so a gzip bomb costs at most that much memory and the time to inflate it. The inflater is
//! kept in the [`Decoder`] and reset between reports: building one per report halves
//! throughput (DESIGN.md).

use std::io::Read;

use base64::Engine;
use flate2::{Decompress, FlushDecompress, Status};

use crate::error::DecodeError;
use crate::model::Report;
use crate::parse::parse_report;
use crate::warning::{Warning, WarningCode};

/// Limits applied while decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeOptions {
    /// The largest decompressed report accepted, in bytes (default 20 MiB).
    pub max_decompressed_bytes: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            max_decompressed_bytes: 20 * 1024 * 1024,
        }
    }
}

/// A decoded report: the validated model and the JSON exactly as decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The report; its `warnings` include those about the container (trailing bytes after
    /// gzip, base64 wrapping, ...).
    pub report: Report<'static>,
    /// The decompressed JSON text, as received.
    pub raw_json: String,
}

/// A decoded report whose text is borrowed from the decoded JSON, for code that uses the
/// report and drops it: the HTTP receiver turns it into a bus message. [`Decoded`] copies
/// every string of the report out of the JSON, about forty allocations per report.
#[derive(Debug)]
pub struct DecodedRef<'a> {
    /// The report; its `warnings` include those about the container.
    pub report: Report<'a>,
    /// The decompressed JSON text, as received.
    pub raw_json: &'a str,
}

impl DecodedRef<'_> {
    /// The same report owning its text.
    pub fn into_owned(self) -> Decoded {
        Decoded {
            report: self.report.into_owned(),
            raw_json: self.raw_json.to_owned(),
        }
    }
}

/// The form the bytes turned out to be in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    Gzip,
    Zip,
    Json,
    Base64,
}

/// How deep containers may nest (base64 around zip around gzip around JSON is 3).
const MAX_NESTING: usize = 4;

/// Decodes reports; keep one per thread and reuse it.
pub struct Decoder {
    options: DecodeOptions,
    /// The fast path: libdeflate inflates a whole member into a buffer of the size its
    /// trailer announces, about 10% faster than streaming for report-sized inputs.
    whole: libdeflater::Decompressor,
    /// The careful path: streaming inflate with the cap enforced as output grows, for
    /// trailers that lie (bombs), stray bytes after a member, and several members.
    inflate: Decompress,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DecodeOptions::default())
    }
}

impl Decoder {
    pub fn new(options: DecodeOptions) -> Self {
        Self {
            options,
            // Raw deflate: the gzip header and trailer are read here, which lets us accept
            // stray bytes after a member and reuse one inflater for every member.
            inflate: Decompress::new(false),
            whole: libdeflater::Decompressor::new(),
        }
    }

    pub fn options(&self) -> DecodeOptions {
        self.options
    }

    /// Decodes one report from bytes in any accepted form.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, DecodeError> {
        let (raw_json, container_warnings) = self.report_json(input)?;
        let report = parse_in_container(&raw_json, container_warnings)?.into_owned();
        Ok(Decoded { report, raw_json })
    }

    /// Decodes one report and hands it to `use_report` with its text borrowed from the JSON,
    /// which is dropped when `use_report` returns.
    pub fn decode_with<R>(
        &mut self,
        input: &[u8],
        use_report: impl FnOnce(DecodedRef<'_>) -> R,
    ) -> Result<R, DecodeError> {
        let (raw_json, container_warnings) = self.report_json(input)?;
        let report = parse_in_container(&raw_json, container_warnings)?;
        Ok(use_report(DecodedRef {
            report,
            raw_json: &raw_json,
        }))
    }

    /// The JSON text inside whatever containers `input` is in, and the warnings about them.
    pub(crate) fn report_json(
        &mut self,
        input: &[u8],
    ) -> Result<(String, Vec<Warning>), DecodeError> {
        let mut container_warnings = Vec::new();
        let json = self.unwrap_to_json(input, &mut container_warnings, 0)?;
        Ok((into_utf8(json)?, container_warnings))
    }

    /// Peels containers off until JSON text remains.
    fn unwrap_to_json(
        &mut self,
        input: &[u8],
        warnings: &mut Vec<Warning>,
        depth: usize,
    ) -> Result<Vec<u8>, DecodeError> {
        if depth > MAX_NESTING {
            return Err(DecodeError::NotAReport {
                reason: "containers nested too deeply".into(),
            });
        }
        let mut input = input;
        if let Some(rest) = input.strip_prefix(b"\xEF\xBB\xBF") {
            warnings.push(Warning::new(WarningCode::ByteOrderMark, ""));
            input = rest;
        }
        match sniff(input) {
            Some(Sniffed::Json) => {
                if input.len() > self.options.max_decompressed_bytes {
                    return Err(DecodeError::TooLarge {
                        limit_bytes: self.options.max_decompressed_bytes,
                    });
                }
                Ok(input.to_vec())
            }
            Some(Sniffed::Gzip) => {
                let inner = self.gunzip(input, warnings)?;
                self.unwrap_inner(inner, "gzip", warnings, depth)
            }
            Some(Sniffed::Zip) => {
                warnings.push(Warning::new(WarningCode::ZipArchive, ""));
                let inner = unzip(input, self.options.max_decompressed_bytes)?;
                self.unwrap_inner(inner, "zip", warnings, depth)
            }
            Some(Sniffed::Base64) => {
                let inner = decode_base64(input).ok_or_else(|| not_a_report(input))?;
                if sniff(&inner).is_none() {
                    return Err(not_a_report(input));
                }
                warnings.push(Warning::new(WarningCode::Base64Wrapped, ""));
                self.unwrap_to_json(&inner, warnings, depth + 1)
            }
            None => Err(not_a_report(input)),
        }
    }

    /// What a container held must be JSON (or, tolerated, another container).
    fn unwrap_inner(
        &mut self,
        inner: Vec<u8>,
        container: &'static str,
        warnings: &mut Vec<Warning>,
        depth: usize,
    ) -> Result<Vec<u8>, DecodeError> {
        match sniff(&inner) {
            Some(Sniffed::Json) => Ok(inner),
            Some(_) => self.unwrap_to_json(&inner, warnings, depth + 1),
            None => Err(DecodeError::NotAReport {
                reason: format!(
                    "the {container} data does not hold JSON ({})",
                    describe_bytes(&inner)
                ),
            }),
        }
    }

    /// Inflates every gzip member in `input` (RFC 1952 allows several), with the size cap.
    /// Bytes after the last member that are not a member are ignored with a warning: some
    /// mail gateways append a banner or padding to attachments.
    fn gunzip(
        &mut self,
        input: &[u8],
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<u8>, DecodeError> {
        if let Some(out) = self.gunzip_whole(input)? {
            return Ok(out);
        }
        self.gunzip_streaming(input, warnings)
    }

    /// The common case in one call: a single member that ends exactly at the end of the
    /// input, whose trailer announces a size within the cap. `None` when that is not the
    /// case, to fall back to streaming. The trailer's checksum is verified against the
    /// output, so a member followed by anything else cannot pass for the whole input unless
    /// its CRC happens to equal the input's bytes 8 to 4 from the end.
    fn gunzip_whole(&mut self, input: &[u8]) -> Result<Option<Vec<u8>>, DecodeError> {
        let body = gzip_header_len(input)?;
        let Some(deflate_end) = input.len().checked_sub(8).filter(|&end| end >= body) else {
            return Ok(None);
        };
        let trailer = &input[deflate_end..];
        let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
        let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]) as usize;
        if size > self.options.max_decompressed_bytes {
            return Ok(None);
        }
        let mut out = vec![0u8; size];
        match self
            .whole
            .deflate_decompress(&input[body..deflate_end], &mut out)
        {
            Ok(written) if written == size && crc32fast::hash(&out) == crc => Ok(Some(out)),
            _ => Ok(None),
        }
    }

    fn gunzip_streaming(
        &mut self,
        input: &[u8],
        warnings: &mut Vec<Warning>,
    ) -> Result<Vec<u8>, DecodeError> {
        let cap = self.options.max_decompressed_bytes;
        // The last four bytes are the uncompressed size (mod 2^32) when nothing trails the
        // member; use it only as a capacity hint, never trusting it beyond the cap or 1 MiB.
        let hint = input
            .len()
            .checked_sub(4)
            .map(|at| {
                u32::from_le_bytes([input[at], input[at + 1], input[at + 2], input[at + 3]])
                    as usize
            })
            .unwrap_or(0);
        let mut out = Vec::with_capacity(hint.clamp(256, 1 << 20).min(cap) + 1);
        let mut rest = input;
        loop {
            let body = gzip_header_len(rest)?;
            let member_start = out.len();
            let consumed = self.inflate_member(&rest[body..], &mut out, cap)?;
            let trailer = &rest[body + consumed..];
            if trailer.len() < 8 {
                return Err(DecodeError::Compression {
                    container: "gzip",
                    reason: "the data ends before the gzip trailer (truncated)".into(),
                });
            }
            let crc = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
            let size = u32::from_le_bytes([trailer[4], trailer[5], trailer[6], trailer[7]]);
            let member = &out[member_start..];
            if crc32fast::hash(member) != crc || member.len() as u32 != size {
                return Err(DecodeError::Compression {
                    container: "gzip",
                    reason: "checksum mismatch: the data is corrupt".into(),
                });
            }
            rest = &trailer[8..];
            if rest.is_empty() {
                return Ok(out);
            }
            if !rest.starts_with(&[0x1f, 0x8b]) {
                warnings.push(Warning::new(WarningCode::TrailingBytesAfterGzip, ""));
                return Ok(out);
            }
        }
    }

    /// Inflates one raw deflate stream into `out`; returns the input bytes consumed.
    fn inflate_member(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        cap: usize,
    ) -> Result<usize, DecodeError> {
        self.inflate.reset(false);
        let start_in = self.inflate.total_in();
        loop {
            if out.len() == out.capacity() {
                if out.len() > cap {
                    return Err(DecodeError::TooLarge { limit_bytes: cap });
                }
                // Grow geometrically but never past cap + 1: one byte over the cap is
                // enough to know the report is too large.
                let target = (out.capacity() * 2).clamp(4096, cap + 1);
                out.reserve_exact(target - out.len());
            }
            let consumed = (self.inflate.total_in() - start_in) as usize;
            let before_out = out.len();
            let status = self
                .inflate
                .decompress_vec(&input[consumed..], out, FlushDecompress::None)
                .map_err(|e| DecodeError::Compression {
                    container: "gzip",
                    reason: e.to_string(),
                })?;
            if out.len() > cap {
                return Err(DecodeError::TooLarge { limit_bytes: cap });
            }
            let consumed_now = (self.inflate.total_in() - start_in) as usize;
            match status {
                Status::StreamEnd => return Ok(consumed_now),
                Status::Ok | Status::BufError => {
                    let progressed = out.len() > before_out || consumed_now > consumed;
                    if !progressed && out.len() < out.capacity() {
                        return Err(DecodeError::Compression {
                            container: "gzip",
                            reason: "the compressed data ends early (truncated)".into(),
                        });
                    }
                }
            }
        }
    }
}

/// Parses a report's JSON; the warnings about its containers come first.
pub(crate) fn parse_in_container(
    raw_json: &str,
    mut container_warnings: Vec<Warning>,
) -> Result<Report<'_>, DecodeError> {
    let mut report = parse_report(raw_json)?;
    if !container_warnings.is_empty() {
        container_warnings.append(&mut report.warnings);
        report.warnings = container_warnings;
    }
    Ok(report)
}

fn into_utf8(json: Vec<u8>) -> Result<String, DecodeError> {
    String::from_utf8(json).map_err(|e| {
        let offset = e.utf8_error().valid_up_to();
        DecodeError::Syntax {
            offset,
            line: 0,
            column: 0,
            message: "the report is not valid UTF-8".into(),
            near: String::new(),
        }
    })
}

/// Length of the gzip member header at the start of `input` (RFC 1952 §2.3).
fn gzip_header_len(input: &[u8]) -> Result<usize, DecodeError> {
    let damaged = |reason: &str| DecodeError::Compression {
        container: "gzip",
        reason: reason.into(),
    };
    if input.len() < 10 || input[0] != 0x1f || input[1] != 0x8b {
        return Err(damaged("not a gzip header"));
    }
    if input[2] != 8 {
        return Err(damaged(
            "unknown compression method (only deflate is defined)",
        ));
    }
    let flags = input[3];
    if flags & 0xe0 != 0 {
        return Err(damaged("reserved header flags are set"));
    }
    let mut at = 10;
    if flags & 0x04 != 0 {
        let xlen = input
            .get(at..at + 2)
            .ok_or_else(|| damaged("truncated header"))?;
        at += 2 + usize::from(u16::from_le_bytes([xlen[0], xlen[1]]));
    }
    for flag in [0x08, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & flag != 0 {
            let end = input
                .get(at..)
                .and_then(|rest| rest.iter().position(|&b| b == 0))
                .ok_or_else(|| damaged("truncated header"))?;
            at += end + 1;
        }
    }
    if flags & 0x02 != 0 {
        at += 2;
    }
    if at > input.len() {
        return Err(damaged("truncated header"));
    }
    Ok(at)
}

/// Reads the report out of a zip archive: the first entry named `*.json` or `*.json.gz`, or
/// the only file entry; at most `cap` bytes.
fn unzip(input: &[u8], cap: usize) -> Result<Vec<u8>, DecodeError> {
    let damaged = |reason: String| DecodeError::Compression {
        container: "zip",
        reason,
    };
    let mut archive =
        zip::ZipArchive::new(std::io::Cursor::new(input)).map_err(|e| damaged(e.to_string()))?;
    let mut chosen = None;
    let mut files = 0;
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| damaged(e.to_string()))?;
        if entry.is_dir() {
            continue;
        }
        files += 1;
        let name = entry
            .name()
            .map_err(|e| damaged(e.to_string()))?
            .to_ascii_lowercase();
        if chosen.is_none()
            && (name.ends_with(".json") || name.ends_with(".json.gz") || name.ends_with(".gz"))
        {
            chosen = Some(index);
        }
        if chosen.is_none() && files == 1 {
            chosen = Some(index);
        }
    }
    let index = chosen.ok_or_else(|| DecodeError::NotAReport {
        reason: "the zip archive holds no file".into(),
    })?;
    let entry = archive
        .by_index(index)
        .map_err(|e| damaged(e.to_string()))?;
    let mut out = Vec::with_capacity((entry.size() as usize).min(cap).min(1 << 20));
    entry
        .take(cap as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| damaged(e.to_string()))?;
    if out.len() > cap {
        return Err(DecodeError::TooLarge { limit_bytes: cap });
    }
    Ok(out)
}

/// Decodes base64 text that may hold line breaks and surrounding whitespace.
fn decode_base64(input: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = input
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(&compact))
        .ok()
}

/// Decides what the bytes are, from their first bytes.
fn sniff(input: &[u8]) -> Option<Sniffed> {
    if input.starts_with(&[0x1f, 0x8b]) {
        return Some(Sniffed::Gzip);
    }
    if input.starts_with(b"PK\x03\x04") {
        return Some(Sniffed::Zip);
    }
    let first = input.iter().position(|b| !b.is_ascii_whitespace())?;
    let body = &input[first..];
    if body[0] == b'{' {
        return Some(Sniffed::Json);
    }
    // Base64 of a gzip header starts "H4sI"; of a zip "UEsDB"; of "{" "ey" or "e3" / "ewo".
    let base64ish = body.iter().take(4096).all(|b| {
        b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=') || b.is_ascii_whitespace()
    });
    if base64ish
        && (body.starts_with(b"H4sI")
            || body.starts_with(b"UEsDB")
            || body.starts_with(b"ey")
            || body.starts_with(b"ew")
            || body.starts_with(b"e3"))
    {
        return Some(Sniffed::Base64);
    }
    None
}

fn not_a_report(input: &[u8]) -> DecodeError {
    DecodeError::NotAReport {
        reason: format!(
            "expected gzip, zip or a JSON object, found {}",
            describe_bytes(input)
        ),
    }
}

/// A short description of what some bytes look like, for error messages.
fn describe_bytes(input: &[u8]) -> String {
    let trimmed = input.trim_ascii_start();
    if trimmed.is_empty() {
        return "no data".into();
    }
    let head = &trimmed[..trimmed.len().min(64)];
    let lower = String::from_utf8_lossy(head).to_ascii_lowercase();
    let kind = if lower.starts_with("<!doctype html") || lower.starts_with("<html") {
        "an HTML page"
    } else if lower.starts_with('<') {
        "XML or HTML"
    } else if lower.starts_with("%pdf") {
        "a PDF document"
    } else if trimmed[0] == b'[' {
        "a JSON array"
    } else if head
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "text"
    } else {
        "binary data"
    };
    let printable: String = String::from_utf8_lossy(head)
        .chars()
        .take(crate::error::EXCERPT_CHARS)
        .map(|c| if c.is_control() { '.' } else { c })
        .collect();
    format!("{kind} starting `{printable}`")
}

/// Decodes one report from bytes with default options (convenience for tools and tests; a
/// service keeps a [`Decoder`]).
pub fn decode(input: &[u8]) -> Result<Decoded, DecodeError> {
    Decoder::default().decode(input)
}
