//! The compact, versioned binary encoding of session records.
//!
//! Stores keep the fixed part of a session ([`Meta`]) as one small blob, and attributes
//! separately (Redis hash fields, SQL rows) so that a request writes only what it changed. Whole
//! records are encoded only where one blob is the natural unit (the in-memory store, fixtures,
//! journals). The format is documented in `docs/format.md`; every released version has a fixture
//! under `crates/ratatoskr-core/tests/fixtures/` that the test suite decodes.
//!
//! Nothing that can be derived is stored: no token (never stored), no key (it is the lookup), no
//! handle (derived from the key), no CSRF secret (derived from the token, since meta format 2), no
//! idle deadline (`last_seen + idle_timeout`), and the absolute deadline as an offset from
//! creation. Integers are LEB128 varints.
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

/// The meta format version this build writes. Format 1 (0.1.0) also held a 16-byte CSRF secret;
/// it is still read (the secret skipped: it is derived from the token now).
pub const META_FORMAT: u8 = 2;
/// The whole-record format version this build writes (its meta, inline, carries its own format).
pub const RECORD_FORMAT: u8 = 1;
/// The bytes meta format 1 spent on the CSRF secret it stored.
const V1_CSRF_BYTES: usize = 16;

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
    put_varint(out, duration_code(to_u64(meta.idle_timeout)?));
    put_varint(
        out,
        duration_code(to_u64(meta.absolute_deadline - meta.created_at)?),
    );
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
    if format != 1 && format != META_FORMAT {
        return Err(CodecError::UnknownFormat(format));
    }
    let flags = r.byte()?;
    if flags & !KNOWN_FLAGS != 0 {
        return Err(CodecError::Malformed("unknown flags"));
    }
    let version = r.varint()?;
    let created_at = from_u64(r.varint()?)?;
    let duration = |v: u64| {
        if format == 1 {
            from_u64(v)
        } else {
            duration_ms_of(v)
        }
    };
    let idle_timeout = duration(r.varint()?)?;
    let absolute_deadline = created_at
        .checked_add(duration(r.varint()?)?)
        .ok_or(CodecError::Malformed("deadline out of range"))?;
    if format == 1 {
        r.take(V1_CSRF_BYTES)?;
    }
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

/// A duration as meta format 2 writes it: whole seconds as `s << 1 | 1` (7,200,000 ms, the
/// default idle timeout, takes 2 bytes instead of 4), anything else as `ms << 1`.
fn duration_code(ms: u64) -> u64 {
    if ms.is_multiple_of(1000) {
        (ms / 1000) << 1 | 1
    } else {
        ms << 1
    }
}

/// The milliseconds a [`duration_code`] stands for.
fn duration_ms_of(code: u64) -> Result<Millis, CodecError> {
    let ms = if code & 1 == 1 {
        (code >> 1)
            .checked_mul(1000)
            .ok_or(CodecError::Malformed("time out of range"))?
    } else {
        code >> 1
    };
    from_u64(ms)
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
        // 2 header + 1 version + 6 created (ms) + 2 idle + 3 absolute offset (2 h and 24 h in
        // whole seconds) + 8 fingerprint + 1 + 7 user id; no CSRF secret (format 1 had 16 bytes
        // more for it, and 4 + 4 for the durations in milliseconds)
        assert_eq!(blob.len(), 30);
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
        assert_eq!(decode_meta(&[3, 0]), Err(CodecError::UnknownFormat(3)));
        assert_eq!(decode_meta(&[0, 0]), Err(CodecError::UnknownFormat(0)));
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

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// A decoded record must be one the encoder can write, and must survive that round trip.
    fn assert_canonical(r: &Record, what: &str) {
        let big = Limits {
            max_record_bytes: usize::MAX,
            max_attr_name_bytes: usize::MAX,
            max_user_id_bytes: usize::MAX,
        };
        let again = encode_record(r, &big).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(&decode_record(&again).unwrap(), r, "{what}");
    }

    /// Pure noise rarely passes the format byte, so the noise here starts from valid blobs: every
    /// prefix, every single-byte change and random multi-byte changes of real records and metas.
    /// Each outcome is checked: an error names the right cause for the header bytes, a success
    /// decodes to a record that encodes and decodes back to itself, and both outcomes occur often
    /// (the decoder is exercised past the header, not only at it).
    #[test]
    fn random_garbage_never_panics() {
        let mut state = 0x1234_5678_u64;
        let mut anon = Record::new(None, 5, Duration::from_millis(1), Duration::from_millis(2));
        anon.attrs.insert("x".into(), vec![1, 2, 3]);
        let (mut ok, mut err, mut body_err, mut meta_ok, mut meta_body_err) = (0, 0, 0, 0, 0);
        for record in [sample(), anon] {
            let blob = &encode_record(&record, &Limits::default()).unwrap();
            let meta = encode_meta(&record.meta, &Limits::default()).unwrap();
            assert_eq!(
                &blob[1..1 + meta.len()],
                &meta[..],
                "a record embeds its meta"
            );
            for n in 0..blob.len() {
                assert!(decode_record(&blob[..n]).is_err(), "prefix of {n} bytes");
            }
            for n in 0..meta.len() {
                assert_eq!(decode_meta(&meta[..n]), Err(CodecError::Truncated), "{n}");
            }
            let mut mutated = Vec::new();
            for i in 0..blob.len() {
                for v in [0u8, 1, 0x7f, 0x80, 0xff, blob[i] ^ 1] {
                    let mut m = blob.clone();
                    m[i] = v;
                    mutated.push(m);
                }
            }
            for _ in 0..3_000 {
                let mut m = blob.clone();
                for _ in 0..1 + xorshift(&mut state) % 4 {
                    let at = (xorshift(&mut state) as usize) % m.len();
                    m[at] = xorshift(&mut state) as u8;
                }
                if xorshift(&mut state).is_multiple_of(4) {
                    let cut = 3 + (xorshift(&mut state) as usize) % (m.len() - 3);
                    m.truncate(cut);
                }
                mutated.push(m);
            }
            for m in &mutated {
                match decode_record(m) {
                    Ok(r) => {
                        ok += 1;
                        assert_canonical(&r, "a mutated record that decodes");
                        if m == blob {
                            assert_eq!(r, record);
                        }
                    }
                    Err(e) => {
                        err += 1;
                        if m[0] != RECORD_FORMAT {
                            assert_eq!(e, CodecError::UnknownFormat(m[0]));
                        } else if !matches!(m[1], 1 | META_FORMAT) {
                            assert_eq!(e, CodecError::UnknownFormat(m[1]));
                        } else if m[2] & !KNOWN_FLAGS != 0 {
                            assert_eq!(e, CodecError::Malformed("unknown flags"));
                        } else {
                            body_err += 1;
                        }
                    }
                }
                // The meta part alone.
                let part = &m[1..(1 + meta.len()).min(m.len())];
                match decode_meta(part) {
                    Ok(decoded) => {
                        meta_ok += 1;
                        let again = encode_meta(&decoded, &Limits::default()).unwrap();
                        assert_eq!(decode_meta(&again), Ok(decoded));
                    }
                    Err(e) if !matches!(part[0], 1 | META_FORMAT) => {
                        assert_eq!(e, CodecError::UnknownFormat(part[0]));
                    }
                    Err(e) if part[1] & !KNOWN_FLAGS != 0 => {
                        assert_eq!(e, CodecError::Malformed("unknown flags"));
                    }
                    Err(_) => meta_body_err += 1,
                }
            }
        }
        assert!(ok > 1_000, "only {ok} mutated records decoded");
        assert!(
            body_err > 500,
            "only {body_err} errors past the header ({err} in all)"
        );
        assert!(meta_ok > 1_000, "only {meta_ok} mutated metas decoded");
        assert!(
            meta_body_err > 500,
            "only {meta_body_err} meta errors past the header"
        );
        // And plain noise, for completeness.
        for len in 0..200 {
            let blob: Vec<u8> = (0..len).map(|_| xorshift(&mut state) as u8).collect();
            if let Ok(r) = decode_record(&blob) {
                assert_canonical(&r, "noise that decodes");
            }
            let _ = decode_meta(&blob);
        }
    }

    fn meta_with_version(version: u64) -> Meta {
        let mut r = sample();
        r.meta.version = version;
        r.meta
    }

    #[test]
    fn varints_round_trip_at_every_width_and_bit_pattern() {
        let mut values = vec![0, 1, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0x4000, u64::MAX];
        for shift in 0..64 {
            values.push(1 << shift);
            values.push((1 << shift) - 1);
            values.push(u64::MAX >> shift);
        }
        let mut state = 99;
        values.extend((0..1_000).map(|_| xorshift(&mut state)));
        for v in values {
            let meta = meta_with_version(v);
            let blob = encode_meta(&meta, &Limits::default()).unwrap();
            assert_eq!(decode_meta(&blob), Ok(meta), "{v:#x}");
            // Width: 7 bits per byte, at least one byte.
            let mut one = Vec::new();
            put_varint(&mut one, v);
            assert_eq!(
                one.len(),
                (64 - v.leading_zeros() as usize).div_ceil(7).max(1)
            );
            assert_eq!(Reader(&one).varint(), Ok(v));
        }
    }

    #[test]
    fn varints_past_64_bits_are_refused() {
        // Ten bytes: the tenth may carry only the 64th bit.
        let mut max = vec![0xff; 9];
        max.push(0x01);
        assert_eq!(Reader(&max).varint(), Ok(u64::MAX));
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(
            Reader(&over).varint(),
            Err(CodecError::Malformed("varint overflow"))
        );
        // Continuing past ten bytes.
        let mut long = vec![0x80; 9];
        long.push(0x81);
        long.push(0x00);
        assert_eq!(
            Reader(&long).varint(),
            Err(CodecError::Malformed("varint overflow"))
        );
        assert_eq!(Reader(&[0x80, 0x80]).varint(), Err(CodecError::Truncated));
        // Non-minimal spellings still decode to their value.
        assert_eq!(Reader(&[0x80, 0x00]).varint(), Ok(0));
        assert_eq!(Reader(&[0x81, 0x01]).varint(), Ok(129));
    }

    /// The meta the byte-layout tests spell out: user `ab`, a fingerprint, a two-byte version.
    fn layout_meta() -> Meta {
        Meta {
            user_id: Some("ab".into()),
            created_at: 300,
            idle_timeout: 2,
            absolute_deadline: 310,
            version: 129,
            fingerprint: Some([9; 8]),
        }
    }

    #[test]
    fn meta_bytes_are_exactly_as_documented() {
        let meta = layout_meta();
        let mut want = vec![
            2,
            FLAG_USER | FLAG_FINGERPRINT,
            0x81,
            0x01,
            0xac,
            0x02,
            4,  // idle 2 ms: 2 << 1 (not whole seconds)
            20, // absolute offset 10 ms: 10 << 1
        ];
        want.extend([9; 8]);
        want.extend([2, b'a', b'b']);
        assert_eq!(encode_meta(&meta, &Limits::default()).unwrap(), want);
        // Whole seconds: s << 1 | 1 — 2 h idle in 2 bytes (14,401), 24 h in 3 (172,801).
        let hours = Meta {
            idle_timeout: 7_200_000,
            absolute_deadline: 300 + 86_400_000,
            ..meta.clone()
        };
        let blob = encode_meta(&hours, &Limits::default()).unwrap();
        assert_eq!(&blob[6..11], &[0xc1, 0x70, 0x81, 0xc6, 0x0a]);
        assert_eq!(decode_meta(&blob), Ok(hours));
        // 1,500 ms is not whole seconds; 0 is (0 s).
        for ms in [1_500, 0, 1_000, 999, 1_001] {
            let m = Meta {
                idle_timeout: ms,
                ..meta.clone()
            };
            let blob = encode_meta(&m, &Limits::default()).unwrap();
            assert_eq!(u64::from(blob[6]) & 1, u64::from(ms % 1000 == 0), "{ms}");
            assert_eq!(decode_meta(&blob), Ok(m), "{ms}");
        }
        let anon = Meta {
            user_id: None,
            fingerprint: None,
            ..meta.clone()
        };
        assert_eq!(encode_meta(&anon, &Limits::default()).unwrap()[1], 0);
        let mut fp_only = want.clone();
        fp_only[1] = FLAG_FINGERPRINT;
        fp_only.truncate(want.len() - 3);
        assert_eq!(
            decode_meta(&fp_only),
            Ok(Meta {
                user_id: None,
                ..meta.clone()
            })
        );
        let mut user_only = want[..8].to_vec();
        user_only[1] = FLAG_USER;
        user_only.extend([2, b'a', b'b']);
        assert_eq!(
            decode_meta(&user_only),
            Ok(Meta {
                fingerprint: None,
                ..meta
            })
        );
        for flags in 4..=255u8 {
            let mut m = want.clone();
            m[1] = flags;
            assert_eq!(
                decode_meta(&m),
                Err(CodecError::Malformed("unknown flags")),
                "{flags}"
            );
        }
    }

    /// Meta format 1 (0.1.0) stored a 16-byte CSRF secret after the varints. It still decodes, to
    /// the same meta as format 2 without those bytes; its secret is not kept (the secret is
    /// derived from the token now), and a record holding it is written back as format 2.
    #[test]
    fn a_format_1_meta_is_read_with_its_stored_csrf_secret_skipped() {
        let meta = layout_meta();
        let v2 = encode_meta(&meta, &Limits::default()).unwrap();
        assert_eq!(v2[0], 2);
        // Format 1: durations in plain milliseconds (2, 10), then the secret.
        let mut v1 = vec![
            1,
            FLAG_USER | FLAG_FINGERPRINT,
            0x81,
            0x01,
            0xac,
            0x02,
            2,
            10,
        ];
        v1.extend([0x5a; 16]);
        v1.extend([9; 8]);
        v1.extend([2, b'a', b'b']);
        assert_eq!(v1.len(), v2.len() + 16);
        assert_eq!(decode_meta(&v1), Ok(meta.clone()));
        // One byte of the secret missing, or one too many: an error, not a shifted decode.
        let mut short = v1.clone();
        short.remove(8);
        assert!(decode_meta(&short).is_err());
        assert!(decode_meta(&v1[..8 + 15]).is_err());
        // Format 2 bytes labelled format 1 lack the secret: refused.
        let mut mislabelled = v2.clone();
        mislabelled[0] = 1;
        assert!(decode_meta(&mislabelled).is_err());
        // Inside a whole record (record format 1 around meta format 1).
        let mut record = vec![RECORD_FORMAT];
        record.extend(&v1);
        record.extend([5, 0]);
        let r = decode_record(&record).unwrap();
        assert_eq!((r.meta, r.last_seen), (meta.clone(), 305));
        assert_eq!(
            encode_meta(&decode_meta(&v1).unwrap(), &Limits::default()).unwrap(),
            v2
        );
    }

    /// The anonymous record the byte-layout tests spell out: created at 1000, idle 5 ms,
    /// absolute 7 ms.
    fn layout_record() -> Record {
        Record::new(
            None,
            1_000,
            Duration::from_millis(5),
            Duration::from_millis(7),
        )
    }

    #[test]
    fn record_bytes_are_exactly_as_documented() {
        let mut r = layout_record();
        r.last_seen = 1_002;
        r.attrs.insert("b".into(), vec![0xee]);
        r.attrs.insert("a".into(), vec![]);
        let mut want = vec![1, 2, 0, 1, 0xe8, 0x07, 10, 14];
        want.extend([2, 2, 1, b'a', 0, 1, b'b', 1, 0xee]);
        assert_eq!(encode_record(&r, &Limits::default()).unwrap(), want);
        assert_eq!(decode_record(&want), Ok(r));
    }

    #[test]
    fn structural_errors_are_named() {
        let r = layout_record();
        let base = encode_record(&r, &Limits::default()).unwrap();
        // Two attributes with the same name.
        let mut dup = base[..base.len() - 1].to_vec();
        dup.extend([2, 1, b'a', 0, 1, b'a', 0]);
        assert_eq!(
            decode_record(&dup),
            Err(CodecError::Malformed("duplicate attribute"))
        );
        // A name that is not UTF-8.
        let mut bad_name = base[..base.len() - 1].to_vec();
        bad_name.extend([1, 1, 0xff, 0]);
        assert_eq!(
            decode_record(&bad_name),
            Err(CodecError::Malformed("attribute name is not UTF-8"))
        );
        // A user id that is not UTF-8.
        let mut bad_user = encode_meta(&r.meta, &Limits::default()).unwrap();
        bad_user[1] = FLAG_USER;
        bad_user.extend([1, 0xff]);
        assert_eq!(
            decode_meta(&bad_user),
            Err(CodecError::Malformed("user id is not UTF-8"))
        );
        // A time past i64.
        let mut huge = vec![1, 0, 0];
        huge.extend([0xff; 9]);
        huge.push(0x01);
        assert_eq!(
            decode_meta(&huge),
            Err(CodecError::Malformed("time out of range"))
        );
        // A deadline offset that overflows.
        let mut far = vec![1, 0, 0];
        far.extend([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]); // i64::MAX
        far.extend([1, 1]);
        assert_eq!(
            decode_meta(&far),
            Err(CodecError::Malformed("deadline out of range"))
        );
        // A last-seen offset that overflows.
        let mut late = vec![1];
        let mut m = r.meta.clone();
        m.created_at = i64::MAX - 1;
        m.absolute_deadline = i64::MAX - 1;
        late.extend(encode_meta(&m, &Limits::default()).unwrap());
        late.extend([2, 0]);
        assert_eq!(
            decode_record(&late),
            Err(CodecError::Malformed("last seen out of range"))
        );
        // Negative times cannot be written.
        let mut neg = r.meta.clone();
        neg.created_at = -1;
        assert_eq!(
            encode_meta(&neg, &Limits::default()),
            Err(CodecError::Malformed("negative time"))
        );
        assert_eq!(
            decode_meta(&[1, 0, 0, 0, 0, 0]),
            Err(CodecError::Truncated),
            "format 1: the CSRF secret is missing"
        );
    }

    #[test]
    fn limits_are_inclusive_and_exact() {
        let limits = Limits::default();
        let mut r = sample();
        r.meta.user_id = Some("u".repeat(256));
        assert!(encode_meta(&r.meta, &limits).is_ok(), "256-byte user id");
        r.meta.user_id = Some("u".repeat(257));
        assert_eq!(
            encode_meta(&r.meta, &limits),
            Err(CodecError::NameTooLong {
                what: "the user id",
                size: 257,
                limit: 256
            })
        );
        assert_eq!(check_attr_name(&"n".repeat(128), &limits), Ok(()));
        assert_eq!(
            check_attr_name(&"n".repeat(129), &limits),
            Err(CodecError::NameTooLong {
                what: "an attribute name",
                size: 129,
                limit: 128
            })
        );
        let mut r = sample();
        r.attrs.insert("n".repeat(129), Vec::new());
        assert!(matches!(
            check_record(&r, &limits),
            Err(CodecError::NameTooLong { size: 129, .. })
        ));

        // A record exactly at the size limit passes; one byte more does not.
        let mut r = sample();
        let meta_len = encode_meta(&r.meta, &limits).unwrap().len();
        let fill = limits.max_record_bytes - record_size(meta_len, &r.attrs) - 4 - 3;
        r.attrs.insert("pad".into(), vec![0; fill]);
        assert_eq!(record_size(meta_len, &r.attrs), limits.max_record_bytes);
        assert_eq!(check_record(&r, &limits), Ok(()));
        assert!(encode_record(&r, &limits).is_ok());
        r.attrs.get_mut("pad").unwrap().push(0);
        assert_eq!(
            check_record(&r, &limits),
            Err(CodecError::TooLarge {
                size: limits.max_record_bytes + 1,
                limit: limits.max_record_bytes
            })
        );
    }

    #[test]
    fn record_size_counts_meta_names_values_and_framing_and_bounds_the_encoding() {
        let mut attrs = BTreeMap::new();
        assert_eq!(record_size(10, &attrs), 22);
        attrs.insert("ab".to_owned(), vec![1, 2, 3]);
        assert_eq!(record_size(10, &attrs), 10 + 12 + 2 + 3 + 4);
        attrs.insert("c".to_owned(), vec![]);
        assert_eq!(record_size(10, &attrs), 10 + 12 + 9 + 5);
        let mut r = sample();
        for i in 0..50 {
            r.attrs.insert(format!("attr-{i}"), vec![i as u8; i * 40]);
            let meta_len = encode_meta(&r.meta, &Limits::default()).unwrap().len();
            let encoded = encode_record(&r, &Limits::default()).unwrap().len();
            assert!(record_size(meta_len, &r.attrs) >= encoded, "{i}");
        }
    }
}
