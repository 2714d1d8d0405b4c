//! Sniffing and decompression: gzip (with stray bytes, several members, bombs), zip, base64.

use std::io::Write;

use tlsrpt_schemas::{DecodeError, DecodeOptions, Decoder, WarningCode, decode};

use crate::alloc_meter::peak_bytes_during;
use crate::support::{RFC_EXAMPLE, gzip};

#[test]
fn gzip_is_sniffed_whatever_was_declared() {
    let decoded = decode(&gzip(RFC_EXAMPLE.as_bytes())).unwrap();
    assert_eq!(decoded.raw_json, RFC_EXAMPLE);
    assert!(decoded.report.warnings.is_empty());
}

#[test]
fn stray_bytes_after_a_gzip_member_are_accepted_and_recorded() {
    let mut bytes = gzip(RFC_EXAMPLE.as_bytes());
    bytes.extend_from_slice(b"\r\n-- \r\nScanned by a mail gateway\r\n");
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.raw_json, RFC_EXAMPLE);
    assert_eq!(
        decoded.report.warnings[0].code,
        WarningCode::TrailingBytesAfterGzip
    );
}

#[test]
fn several_gzip_members_are_concatenated() {
    let (a, b) = RFC_EXAMPLE.split_at(300);
    let mut bytes = gzip(a.as_bytes());
    bytes.extend(gzip(b.as_bytes()));
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.raw_json, RFC_EXAMPLE);
    assert!(decoded.report.warnings.is_empty());
}

#[test]
fn corrupt_and_truncated_gzip_are_refused() {
    let good = gzip(RFC_EXAMPLE.as_bytes());
    let truncated = &good[..good.len() / 2];
    assert!(
        matches!(decode(truncated), Err(DecodeError::Compression { .. })),
        "{:?}",
        decode(truncated)
    );
    let mut flipped = good.clone();
    let at = flipped.len() - 6;
    flipped[at] ^= 0xff; // the stored size
    assert!(matches!(
        decode(&flipped),
        Err(DecodeError::Compression { .. })
    ));
}

/// A gzip bomb (256 MiB of zeros in about 256 KiB) is refused once the cap is passed, without
/// inflating past it: the decoder never holds more than a small multiple of the 1 MiB cap,
/// where inflating the whole bomb would take 256 MiB. (How fast this is belongs to the
/// benches; memory is what a test can assert on a shared machine.)
#[test]
fn a_gzip_bomb_is_refused_at_the_cap() {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        enc.write_all(&zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let mut decoder = Decoder::new(DecodeOptions {
        max_decompressed_bytes: 1 << 20,
    });
    let (result, peak) = peak_bytes_during(|| decoder.decode(&bomb));
    assert_eq!(
        result.unwrap_err(),
        DecodeError::TooLarge {
            limit_bytes: 1 << 20
        }
    );
    assert!(peak < 4 << 20, "held {peak} bytes at once");

    // A bomb that lies in its trailer (claims a small size) takes the streaming path and is
    // stopped there too.
    let mut liar = bomb.clone();
    let n = liar.len();
    liar[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
    let (result, peak) = peak_bytes_during(|| decoder.decode(&liar));
    assert!(
        matches!(result, Err(DecodeError::TooLarge { .. })),
        "{result:?}"
    );
    assert!(peak < 4 << 20, "held {peak} bytes at once");
}

#[test]
fn plain_json_over_the_cap_is_refused() {
    let mut decoder = Decoder::new(DecodeOptions {
        max_decompressed_bytes: 100,
    });
    assert!(matches!(
        decoder.decode(RFC_EXAMPLE.as_bytes()),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn zip_archives_are_opened() {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "google.com!example.com!1!2.json",
        zip::write::SimpleFileOptions::default(),
    )
    .unwrap();
    zip.write_all(RFC_EXAMPLE.as_bytes()).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.raw_json, RFC_EXAMPLE);
    assert_eq!(decoded.report.warnings[0].code, WarningCode::ZipArchive);
}

#[test]
fn base64_with_line_breaks_is_unwrapped() {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(gzip(RFC_EXAMPLE.as_bytes()));
    let wrapped: Vec<u8> = encoded
        .as_bytes()
        .chunks(76)
        .flat_map(|line| line.iter().copied().chain(*b"\r\n"))
        .collect();
    let decoded = decode(&wrapped).unwrap();
    assert_eq!(decoded.raw_json, RFC_EXAMPLE);
    assert_eq!(decoded.report.warnings[0].code, WarningCode::Base64Wrapped);
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(RFC_EXAMPLE.as_bytes());
    let decoded = decode(&bytes).unwrap();
    assert_eq!(decoded.raw_json, RFC_EXAMPLE);
    assert_eq!(decoded.report.warnings[0].code, WarningCode::ByteOrderMark);
}

#[test]
fn one_decoder_decodes_many_reports() {
    let mut decoder = Decoder::default();
    let gz = gzip(RFC_EXAMPLE.as_bytes());
    for _ in 0..3 {
        assert_eq!(decoder.decode(&gz).unwrap().raw_json, RFC_EXAMPLE);
        assert!(decoder.decode(&gz[..gz.len() - 20]).is_err());
    }
}

#[test]
fn a_report_decoded_in_place_borrows_its_text_and_equals_the_owned_one() {
    use std::borrow::Cow;
    let mut bytes = gzip(RFC_EXAMPLE.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    let mut decoder = Decoder::default();
    let owned = decoder.decode(&bytes).unwrap();
    let (borrowed_organisation, same) = decoder
        .decode_with(&bytes, |decoded| {
            let borrowed = matches!(decoded.report.organization_name, Cow::Borrowed(_));
            let same = decoded.raw_json == owned.raw_json && decoded.report == owned.report;
            (borrowed, same)
        })
        .unwrap();
    assert!(borrowed_organisation, "the text is not borrowed");
    assert!(
        same,
        "decoded in place, the report differs from the owned one"
    );
    // The container's warning comes first, as in the owned report.
    assert_eq!(
        owned.report.warnings[0].code,
        WarningCode::TrailingBytesAfterGzip
    );
    let refused = decoder.decode_with(&bytes[..bytes.len() - 30], |_| ());
    assert!(refused.is_err(), "a truncated member was decoded");
}
