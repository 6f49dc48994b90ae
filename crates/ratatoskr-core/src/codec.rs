//! The compact, versioned binary encoding of session records.
//!
//! Stores keep the fixed part of a session ([`Meta`]) as one small blob, and attributes
//! separately (Redis hash fields, SQL rows) so that a request writes only what it changed. Whole
//! records are encoded only where one blob is the natural unit (the in-memory store, fixtures,
//! journals). The format is documented in `docs/format.md`; every released version has a fixture
//! under `crates/ratatoskr-core/tests/fixtures/` that the test suite decodes.
//!
//! Nothing that can be derived is stored: no token (never stored), no key (it is the lookup), no
//! handle (derived from the key), no idle deadline (`last_seen + idle_timeout`), and the absolute
//! deadline as an offset from creation. Integers are LEB128 varints.
//!
//! ```
//! use std::time::Duration;
//! use ratatoskr_core::{codec, record::Record};
//!
//! let record = Record::new(Some("42".into()), 1_700_000_000_000,
//!                          Duration::from_secs(7200), Duration::from_secs(86400));
//! let blob = codec::encode_meta(&record.meta, &codec::Limits::default()).unwrap();
//! assert!(blob.len() < 40);
//! assert_eq!(codec::decode_meta(&blob).unwrap(), record.meta);
//! ```

use std::collections::BTreeMap;

use crate::record::{Meta, Millis, Record};

/// The meta format version this build writes.
pub const META_FORMAT: u8 = 1;
/// The whole-record format version this build writes.
pub const RECORD_FORMAT: u8 = 1;

const FLAG_USER: u8 = 1;
const FLAG_FINGERPRINT: u8 = 2;
const KNOWN_FLAGS: u8 = FLAG_USER | FLAG_FINGERPRINT;

/// Size limits a store enforces on what it is asked to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum encoded size of a whole record (meta, attribute names and values).
    pub max_record_bytes: usize,
    /// Maximum length of an attribute name in bytes.
    pub max_attr_name_bytes: usize,
    /// Maximum length of a user id in bytes.
    pub max_user_id_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_record_bytes: 64 * 1024,
            max_attr_name_bytes: 128,
            max_user_id_bytes: 256,
        }
    }
}

/// Why a blob could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The blob ends before the format says it should.
    #[error("the record is truncated")]
    Truncated,
    /// The blob was written by a format version this build does not know.
    #[error("unknown record format version {0}")]
    UnknownFormat(u8),
    /// The blob is structurally wrong.
    #[error("the record is malformed: {0}")]
    Malformed(&'static str),
    /// The record is larger than the configured limit.
    #[error("the record would be {size} bytes, over the limit of {limit}")]
    TooLarge {
        /// The size it would have.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A name (attribute or user id) is longer than allowed.
    #[error("{what} is {size} bytes, over the limit of {limit}")]
    NameTooLong {
        /// Which name.
        what: &'static str,
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Encode the fixed part of a session.
pub fn encode_meta(meta: &Meta, limits: &Limits) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(48);
    write_meta(&mut out, meta, limits)?;
    Ok(out)
}

fn write_meta(out: &mut Vec<u8>, meta: &Meta, limits: &Limits) -> Result<(), CodecError> {
    if let Some(user) = &meta.user_id
        && user.len() > limits.max_user_id_bytes
    {
        return Err(CodecError::NameTooLong {
            what: "the user id",
            size: user.len(),
            limit: limits.max_user_id_bytes,
        });
    }
    let mut flags = 0;
    if meta.user_id.is_some() {
        flags |= FLAG_USER;
    }
    if meta.fingerprint.is_some() {
        flags |= FLAG_FINGERPRINT;
    }
    out.push(META_FORMAT);
    out.push(flags);
    put_varint(out, meta.version);
    put_varint(out, to_u64(meta.created_at)?);
    put_varint(out, to_u64(meta.idle_timeout)?);
    put_varint(out, to_u64(meta.absolute_deadline - meta.created_at)?);
    out.extend_from_slice(&meta.csrf_secret);
    if let Some(fp) = &meta.fingerprint {
        out.extend_from_slice(fp);
    }
    if let Some(user) = &meta.user_id {
        put_bytes(out, user.as_bytes());
    }
    Ok(())
}

/// Decode the fixed part of a session.
pub fn decode_meta(blob: &[u8]) -> Result<Meta, CodecError> {
    let mut r = Reader(blob);
    let meta = read_meta(&mut r)?;
    r.finish()?;
    Ok(meta)
}

fn read_meta(r: &mut Reader<'_>) -> Result<Meta, CodecError> {
    let format = r.byte()?;
    if format != 1 {
        return Err(CodecError::UnknownFormat(format));
    }
    let flags = r.byte()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(CodecError::Malformed("unknown flags"));
    }
    let version = r.varint()?;
    let created_at = from_u64(r.varint()?)?;
    let idle_timeout = from_u64(r.varint()?)?;
    let absolute_deadline = created_at
        .checked_add(from_u64(r.varint()?)?)
        .ok_or(CodecError::Malformed("deadline out of range"))?;
    let csrf_secret = r.array::<16>()?;
    let fingerprint = if flags & FLAG_FINGERPRINT != 0 {
        Some(r.array::<8>()?)
    } else {
        None
    };
    let user_id = if flags & FLAG_USER != 0 {
        let bytes = r.bytes()?;
        Some(
            String::from_utf8(bytes.to_vec())
                .map_err(|_| CodecError::Malformed("user id is not UTF-8"))?,
        )
    } else {
        None
    };
    Ok(Meta {
        user_id,
        created_at,
        idle_timeout,
        absolute_deadline,
        version,
        fingerprint,
        csrf_secret,
    })
}

/// Check one attribute name against the limits.
pub fn check_attr_name(name: &str, limits: &Limits) -> Result<(), CodecError> {
    if name.len() > limits.max_attr_name_bytes {
        return Err(CodecError::NameTooLong {
            what: "an attribute name",
            size: name.len(),
            limit: limits.max_attr_name_bytes,
        });
    }
    Ok(())
}

/// The size a record counts against [`Limits::max_record_bytes`]: its encoded size.
pub fn record_size(meta_len: usize, attrs: &BTreeMap<String, Vec<u8>>) -> usize {
    meta_len
        + 12
        + attrs
            .iter()
            .map(|(k, v)| k.len() + v.len() + 4)
            .sum::<usize>()
}

/// Check a whole record against the limits without encoding it.
pub fn check_record(record: &Record, limits: &Limits) -> Result<(), CodecError> {
    let meta_len = encode_meta(&record.meta, limits)?.len();
    for name in record.attrs.keys() {
        check_attr_name(name, limits)?;
    }
    let size = record_size(meta_len, &record.attrs);
    if size > limits.max_record_bytes {
        return Err(CodecError::TooLarge {
            size,
            limit: limits.max_record_bytes,
        });
    }
    Ok(())
}

/// Encode a whole record: format byte, meta, last seen, attributes in name order.
pub fn encode_record(record: &Record, limits: &Limits) -> Result<Vec<u8>, CodecError> {
    check_record(record, limits)?;
    let mut out = Vec::with_capacity(64);
    out.push(RECORD_FORMAT);
    write_meta(&mut out, &record.meta, limits)?;
    put_varint(&mut out, to_u64(record.last_seen - record.meta.created_at)?);
    put_varint(&mut out, record.attrs.len() as u64);
    for (name, value) in &record.attrs {
        put_bytes(&mut out, name.as_bytes());
        put_bytes(&mut out, value);
    }
    Ok(out)
}

/// Decode a whole record.
pub fn decode_record(blob: &[u8]) -> Result<Record, CodecError> {
    let mut r = Reader(blob);
    let format = r.byte()?;
    if format != 1 {
        return Err(CodecError::UnknownFormat(format));
    }
    let meta = read_meta(&mut r)?;
    let last_seen = meta
        .created_at
        .checked_add(from_u64(r.varint()?)?)
        .ok_or(CodecError::Malformed("last seen out of range"))?;
    let n = r.varint()?;
    let mut attrs = BTreeMap::new();
    for _ in 0..n {
        let name = String::from_utf8(r.bytes()?.to_vec())
            .map_err(|_| CodecError::Malformed("attribute name is not UTF-8"))?;
        let value = r.bytes()?.to_vec();
        if attrs.insert(name, value).is_some() {
            return Err(CodecError::Malformed("duplicate attribute"));
        }
    }
    r.finish()?;
    Ok(Record {
        meta,
        last_seen,
        attrs,
    })
}

fn to_u64(v: Millis) -> Result<u64, CodecError> {
    u64::try_from(v).map_err(|_| CodecError::Malformed("negative time"))
}

fn from_u64(v: u64) -> Result<Millis, CodecError> {
    i64::try_from(v).map_err(|_| CodecError::Malformed("time out of range"))
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, CodecError> {
        let (&b, rest) = self.0.split_first().ok_or(CodecError::Truncated)?;
        self.0 = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, CodecError> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(CodecError::Malformed("varint overflow"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(CodecError::Malformed("varint overflow"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn bytes(&mut self) -> Result<&'a [u8], CodecError> {
        let n = usize::try_from(self.varint()?).map_err(|_| CodecError::Truncated)?;
        self.take(n)
    }

    fn finish(&self) -> Result<(), CodecError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(CodecError::Malformed("trailing bytes"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Record {
        let mut r = Record::new(
            Some("user-42".into()),
            1_700_000_000_123,
            Duration::from_secs(7200),
            Duration::from_secs(86400),
        );
        r.meta.fingerprint = Some([7; 8]);
        r.meta.version = 3;
        r.last_seen += 5_000;
        r.attrs.insert("counter".into(), b"1".to_vec());
        r.attrs.insert("empty".into(), Vec::new());
        r
    }

    #[test]
    fn record_round_trips() {
        let r = sample();
        let blob = encode_record(&r, &Limits::default()).unwrap();
        assert_eq!(decode_record(&blob).unwrap(), r);
    }

    #[test]
    fn anonymous_meta_round_trips() {
        let r = Record::new(None, 5, Duration::from_millis(1), Duration::from_millis(2));
        let blob = encode_meta(&r.meta, &Limits::default()).unwrap();
        assert_eq!(decode_meta(&blob).unwrap(), r.meta);
    }

    #[test]
    fn meta_for_a_user_is_compact() {
        let r = sample();
        let blob = encode_meta(&r.meta, &Limits::default()).unwrap();
        // 2 header + 1 version + 6 created (ms) + 4 idle (7.2e6 ms) + 4 absolute offset
        // (8.64e7 ms) + 16 csrf + 8 fingerprint + 1 + 7 user id
        assert_eq!(blob.len(), 49);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let blob = encode_record(&sample(), &Limits::default()).unwrap();
        for n in 0..blob.len() {
            assert!(decode_record(&blob[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn trailing_bytes_and_unknown_formats_are_errors() {
        let mut blob = encode_record(&sample(), &Limits::default()).unwrap();
        blob.push(0);
        assert_eq!(
            decode_record(&blob),
            Err(CodecError::Malformed("trailing bytes"))
        );
        blob[0] = 9;
        assert_eq!(decode_record(&blob), Err(CodecError::UnknownFormat(9)));
        assert_eq!(decode_meta(&[2, 0]), Err(CodecError::UnknownFormat(2)));
        assert_eq!(
            decode_meta(&[1, 0x80]),
            Err(CodecError::Malformed("unknown flags"))
        );
    }

    #[test]
    fn oversized_records_are_refused_with_sizes() {
        let mut r = sample();
        r.attrs.insert("big".into(), vec![0; 70 * 1024]);
        match encode_record(&r, &Limits::default()) {
            Err(CodecError::TooLarge { size, limit }) => {
                assert!(size > 70 * 1024);
                assert_eq!(limit, 64 * 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn overlong_names_are_refused() {
        let mut r = sample();
        r.attrs.insert("n".repeat(129), Vec::new());
        assert!(matches!(
            encode_record(&r, &Limits::default()),
            Err(CodecError::NameTooLong { .. })
        ));
        let mut r = sample();
        r.meta.user_id = Some("u".repeat(257));
        assert!(matches!(
            encode_meta(&r.meta, &Limits::default()),
            Err(CodecError::NameTooLong { .. })
        ));
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut state = 0x1234_5678_u64;
        for len in 0..200 {
            let blob: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode_record(&blob);
            let _ = decode_meta(&blob);
        }
    }
}
