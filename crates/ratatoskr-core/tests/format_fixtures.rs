//! Every record format version ever released must keep decoding.
//!
//! Each released format has a checked-in fixture under `tests/fixtures/`. These tests decode them
//! and compare with the values they were written from. A new format version adds fixtures and a
//! test here; old fixtures are never regenerated. To write the fixtures of the CURRENT format
//! (only when introducing it): `RATATOSKR_WRITE_FIXTURES=1 cargo test -p ratatoskr-core --test format_fixtures`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ratatoskr_core::codec::{self, Limits};
use ratatoskr_core::{Meta, Record};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The values the v1 fixtures were written from (their CSRF secrets, `0x10..=0x1f` and `0xaa`
/// × 16, are in the bytes and skipped by today's decoder: the secret is derived from the token).
fn v1_record() -> Record {
    let mut attrs = BTreeMap::new();
    attrs.insert("counter".to_owned(), b"1".to_vec());
    attrs.insert("theme".to_owned(), b"\"dark\"".to_vec());
    attrs.insert("empty".to_owned(), Vec::new());
    Record {
        meta: Meta {
            user_id: Some("42".to_owned()),
            created_at: 1_767_225_600_000,
            idle_timeout: 7_200_000,
            absolute_deadline: 1_767_225_600_000 + 86_400_000,
            version: 2,
            fingerprint: Some([1, 2, 3, 4, 5, 6, 7, 8]),
        },
        last_seen: 1_767_225_600_000 + 60_000,
        attrs,
    }
}

fn v1_anonymous_meta() -> Meta {
    Meta {
        user_id: None,
        created_at: 1_767_225_600_000,
        idle_timeout: 1_800_000,
        absolute_deadline: 1_767_225_600_000 + 3_600_000,
        version: 1,
        fingerprint: None,
    }
}

fn maybe_write(name: &str, bytes: &[u8]) {
    if std::env::var_os("RATATOSKR_WRITE_FIXTURES").is_some() {
        std::fs::write(fixture(name), bytes).unwrap();
    }
}

#[test]
fn record_format_v1_fixture_decodes() {
    let bytes = std::fs::read(fixture("record-v1.bin")).expect("fixture present");
    assert_eq!(
        (bytes[0], bytes[1]),
        (1, 1),
        "record format 1, meta format 1"
    );
    assert_eq!(codec::decode_record(&bytes).unwrap(), v1_record());
}

#[test]
fn meta_format_v1_fixtures_decode() {
    let user = std::fs::read(fixture("meta-v1-user.bin")).expect("fixture present");
    assert_eq!(codec::decode_meta(&user).unwrap(), v1_record().meta);
    let anon = std::fs::read(fixture("meta-v1-anonymous.bin")).expect("fixture present");
    assert_eq!(codec::decode_meta(&anon).unwrap(), v1_anonymous_meta());
    // Re-encoded, they are format 2: without the secret (16 bytes) and with the timeouts in
    // whole seconds (2 h: 2 bytes instead of 4, 24 h: 3 instead of 4), the same values.
    let again = codec::encode_meta(&v1_record().meta, &Limits::default()).unwrap();
    assert_eq!((again[0], again.len()), (2, user.len() - 16 - 3));
}

/// Meta format 2 (no stored CSRF secret) inside record format 1, from the same values.
#[test]
fn meta_format_v2_fixtures_decode() {
    let record = v1_record();
    maybe_write(
        "record-v1-meta-v2.bin",
        &codec::encode_record(&record, &Limits::default()).unwrap(),
    );
    maybe_write(
        "meta-v2-user.bin",
        &codec::encode_meta(&record.meta, &Limits::default()).unwrap(),
    );
    maybe_write(
        "meta-v2-anonymous.bin",
        &codec::encode_meta(&v1_anonymous_meta(), &Limits::default()).unwrap(),
    );
    let bytes = std::fs::read(fixture("record-v1-meta-v2.bin")).expect("fixture present");
    assert_eq!(
        (bytes[0], bytes[1]),
        (1, 2),
        "record format 1, meta format 2"
    );
    assert_eq!(codec::decode_record(&bytes).unwrap(), record);
    let user = std::fs::read(fixture("meta-v2-user.bin")).expect("fixture present");
    assert_eq!(codec::decode_meta(&user).unwrap(), record.meta);
    let anon = std::fs::read(fixture("meta-v2-anonymous.bin")).expect("fixture present");
    assert_eq!(codec::decode_meta(&anon).unwrap(), v1_anonymous_meta());
}

#[test]
fn the_current_format_still_writes_the_v2_bytes() {
    // While meta format 2 is the current format, encoding must reproduce the fixtures byte for
    // byte; when a format 3 is introduced, this test moves to its fixtures.
    let bytes = std::fs::read(fixture("record-v1-meta-v2.bin")).expect("fixture present");
    assert_eq!(
        codec::encode_record(&v1_record(), &Limits::default()).unwrap(),
        bytes
    );
    let user = std::fs::read(fixture("meta-v2-user.bin")).expect("fixture present");
    assert_eq!(
        codec::encode_meta(&v1_record().meta, &Limits::default()).unwrap(),
        user
    );
}
