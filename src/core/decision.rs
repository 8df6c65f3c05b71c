//! PURE: a stream entry becomes a validated [`Decision`], or the reason it is invalid.
//!
//! HeatBridge is a wiring layer, not a validator: values are kept byte for byte. Only the
//! limits of CONTRACT §3 are enforced (plan_id and symbol present, non-empty, at most 256
//! bytes; at most 64 fields and 64 KiB of fields in total).

use std::fmt;

/// Most bytes in a plan_id or symbol.
pub const MAX_ID_LEN: usize = 256;
/// Most fields in one entry.
pub const MAX_FIELDS: usize = 64;
/// Most bytes of field names and values in one entry.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// Byte view of a field name or value; implemented for owned bytes here and for Redis
/// strings in the glue, so parsing needs no copy.
pub trait Bytes {
    /// The bytes.
    fn bytes(&self) -> &[u8];
}

impl Bytes for Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl Bytes for &[u8] {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A stream entry ID (`ms-seq`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// Milliseconds part: the server clock at XADD for auto-generated IDs.
    pub ms: u64,
    /// Sequence part.
    pub seq: u64,
}

impl EntryId {
    /// The smallest ID, `0-0`.
    pub const ZERO: EntryId = EntryId { ms: 0, seq: 0 };

    /// Parses `ms-seq` or `ms` (seq 0). Returns `None` for anything else.
    pub fn parse(s: &[u8]) -> Option<EntryId> {
        let s = std::str::from_utf8(s).ok()?;
        let (ms, seq) = match s.split_once('-') {
            Some((a, b)) => (a, b),
            None => (s, "0"),
        };
        if ms.is_empty() || seq.is_empty() {
            return None;
        }
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if !digits(ms) || !digits(seq) {
            return None;
        }
        Some(EntryId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why an entry cannot be projected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invalid {
    /// A required field is absent.
    Missing(&'static str),
    /// A required field is empty.
    Empty(&'static str),
    /// A required field is longer than [`MAX_ID_LEN`].
    TooLong(&'static str, usize),
    /// More than [`MAX_FIELDS`] fields.
    TooManyFields(usize),
    /// More than [`MAX_ENTRY_BYTES`] in total.
    TooLarge(usize),
    /// On an untagged stream, a plan_id or symbol that starts with a hash tag and a colon
    /// (`{T}:`): its keys would be those of the stream tagged `{T}` (CONTRACT §11).
    TaggedId(&'static str),
    /// The entry has been deleted from the stream (seen when finishing pending entries).
    Deleted,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Missing(n) => write!(f, "missing field {n}"),
            Invalid::Empty(n) => write!(f, "empty field {n}"),
            Invalid::TooLong(n, l) => write!(f, "field {n} is {l} bytes (max {MAX_ID_LEN})"),
            Invalid::TooManyFields(n) => write!(f, "{n} fields (max {MAX_FIELDS})"),
            Invalid::TooLarge(n) => write!(f, "{n} bytes of fields (max {MAX_ENTRY_BYTES})"),
            Invalid::TaggedId(n) => write!(
                f,
                "field {n} starts with a hash tag and a colon ({{T}}:), which names the keys of a \
                 tagged stream; an untagged stream does not project it"
            ),
            Invalid::Deleted => write!(f, "entry no longer in the stream"),
        }
    }
}

/// A validated heat decision, borrowing the entry's fields.
#[derive(Debug, PartialEq)]
pub struct Decision<'a, F: Bytes> {
    /// The stream entry ID.
    pub id: EntryId,
    /// The plan_id field.
    pub plan_id: &'a [u8],
    /// The position of the plan_id field (its last one) in `fields`.
    pub plan_at: usize,
    /// The symbol field.
    pub symbol: &'a [u8],
    /// The position of the symbol field (its last one) in `fields`.
    pub symbol_at: usize,
    /// `ts_epoch` when it is a number; the entry is valid either way.
    pub ts_epoch: Option<f64>,
    /// Every field of the entry, in entry order.
    pub fields: &'a [(F, F)],
}

/// Validates an entry. Fields of any type that can be viewed as bytes are accepted.
///
/// Each field name and value is viewed once (for a Redis string that is a call into the
/// server), in one walk that sums the sizes and finds the last plan_id, symbol and
/// ts_epoch.
pub fn parse<F: Bytes>(id: EntryId, fields: &[(F, F)]) -> Result<Decision<'_, F>, Invalid> {
    if fields.len() > MAX_FIELDS {
        return Err(Invalid::TooManyFields(fields.len()));
    }
    let mut total = 0usize;
    let (mut plan, mut symbol, mut ts) = (None, None, None);
    for (i, (k, v)) in fields.iter().enumerate() {
        let (k, v) = (k.bytes(), v.bytes());
        total += k.len() + v.len();
        match k {
            b"plan_id" => plan = Some((i, v)),
            b"symbol" => symbol = Some((i, v)),
            b"ts_epoch" => ts = Some(v),
            _ => {}
        }
    }
    if total > MAX_ENTRY_BYTES {
        return Err(Invalid::TooLarge(total));
    }
    let (plan_at, plan_id) = required(plan, "plan_id")?;
    let (symbol_at, symbol) = required(symbol, "symbol")?;
    let ts_epoch = ts
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| t.is_finite());
    Ok(Decision {
        id,
        plan_id,
        plan_at,
        symbol,
        symbol_at,
        ts_epoch,
        fields,
    })
}

/// A required field as found (its position and value): present, non-empty, not too long.
fn required<'a>(
    found: Option<(usize, &'a [u8])>,
    name: &'static str,
) -> Result<(usize, &'a [u8]), Invalid> {
    let (at, v) = found.ok_or(Invalid::Missing(name))?;
    if v.is_empty() {
        return Err(Invalid::Empty(name));
    }
    if v.len() > MAX_ID_LEN {
        return Err(Invalid::TooLong(name, v.len()));
    }
    Ok((at, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> Vec<(Vec<u8>, Vec<u8>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    const ID: EntryId = EntryId { ms: 1000, seq: 1 };

    #[test]
    fn entry_id_parse_and_display() {
        assert_eq!(EntryId::parse(b"12-3"), Some(EntryId { ms: 12, seq: 3 }));
        assert_eq!(EntryId::parse(b"12"), Some(EntryId { ms: 12, seq: 0 }));
        assert_eq!(EntryId::parse(b"0"), Some(EntryId::ZERO));
        for bad in [
            &b""[..],
            b"-",
            b"1-",
            b"-1",
            b"a-1",
            b"1-2-3",
            b"+1",
            b"99999999999999999999",
        ] {
            assert_eq!(EntryId::parse(bad), None, "{bad:?}");
        }
        assert_eq!(EntryId { ms: 5, seq: 9 }.to_string(), "5-9");
        assert!(EntryId { ms: 1, seq: 9 } < EntryId { ms: 2, seq: 0 });
    }

    #[test]
    fn valid_seed_decision() {
        let f = entry(&[
            ("ts_epoch", "1735689600"),
            ("symbol", "BTCUSDT"),
            ("plan_id", "p1"),
            ("heat_level", "cold"),
        ]);
        let d = parse(ID, &f).unwrap();
        assert_eq!(d.plan_id, b"p1");
        assert_eq!(d.symbol, b"BTCUSDT");
        assert_eq!(d.ts_epoch, Some(1735689600.0));
        assert_eq!(d.fields.len(), 4);
    }

    #[test]
    fn required_fields() {
        assert_eq!(
            parse(ID, &entry(&[("symbol", "S")])),
            Err(Invalid::Missing("plan_id"))
        );
        assert_eq!(
            parse(ID, &entry(&[("plan_id", "P")])),
            Err(Invalid::Missing("symbol"))
        );
        assert_eq!(
            parse(ID, &entry(&[("plan_id", ""), ("symbol", "S")])),
            Err(Invalid::Empty("plan_id"))
        );
        let long = "x".repeat(257);
        assert_eq!(
            parse(ID, &entry(&[("plan_id", "P"), ("symbol", &long)])),
            Err(Invalid::TooLong("symbol", 257))
        );
        let ok = "x".repeat(256);
        assert!(parse(ID, &entry(&[("plan_id", &ok), ("symbol", "S")])).is_ok());
    }

    #[test]
    fn limits() {
        let mut f = entry(&[("plan_id", "P"), ("symbol", "S")]);
        for i in 0..62 {
            f.push((format!("f{i}").into_bytes(), b"v".to_vec()));
        }
        assert!(parse(ID, &f).is_ok());
        f.push((b"one_more".to_vec(), b"v".to_vec()));
        assert_eq!(parse(ID, &f), Err(Invalid::TooManyFields(65)));

        let big = vec![b'a'; MAX_ENTRY_BYTES];
        let f = vec![
            (b"plan_id".to_vec(), b"P".to_vec()),
            (b"symbol".to_vec(), b"S".to_vec()),
            (b"debug_json".to_vec(), big),
        ];
        assert!(matches!(parse(ID, &f), Err(Invalid::TooLarge(_))));
    }

    #[test]
    fn binary_and_odd_values_are_kept() {
        let f = vec![
            (b"plan_id".to_vec(), b"p*?[{}]\x00\xff".to_vec()),
            (b"symbol".to_vec(), b"{BTC}".to_vec()),
            (b"ts_epoch".to_vec(), b"not-a-number".to_vec()),
        ];
        let d = parse(ID, &f).unwrap();
        assert_eq!(d.plan_id, b"p*?[{}]\x00\xff");
        assert_eq!(d.ts_epoch, None);
    }

    #[test]
    fn last_duplicate_field_wins() {
        let f = entry(&[("plan_id", "a"), ("symbol", "S"), ("plan_id", "b")]);
        let d = parse(ID, &f).unwrap();
        assert_eq!(d.plan_id, b"b");
        assert_eq!((d.plan_at, d.symbol_at), (2, 1));
    }

    #[test]
    fn invalid_reasons_read_well() {
        assert_eq!(
            Invalid::Missing("plan_id").to_string(),
            "missing field plan_id"
        );
        assert_eq!(Invalid::TooManyFields(70).to_string(), "70 fields (max 64)");
    }
}
