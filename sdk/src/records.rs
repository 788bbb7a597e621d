//! The byte encodings of pairs and groups that cross the host boundary in map/reduce calls
//! (`weft:plugin/emit` in `sdk/wit`): every length is an unsigned 32-bit little-endian integer.
//!
//! * pair records: key length, key, value length, value;
//! * group records: key length, key, value count, then each value as length and bytes.

/// Appends a field whose bytes `write` produces, prefixed with its length. On an error
/// nothing is appended.
pub(crate) fn field<E>(
    buf: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<(), E> {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(e) = write(buf) {
        buf.truncate(at);
        return Err(e);
    }
    let len = u32::try_from(buf.len() - at - 4).expect("a field fits in 4 GiB");
    buf[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Appends a length-prefixed field.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a field fits in 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// Appends one group record.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn put_group(buf: &mut Vec<u8>, key: &[u8], values: &[Vec<u8>]) {
    put(buf, key);
    let count = u32::try_from(values.len()).expect("fewer than 2^32 values");
    buf.extend_from_slice(&count.to_le_bytes());
    for value in values {
        put(buf, value);
    }
}

/// Reads records from the front of a byte string.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next 32-bit length or count.
    pub(crate) fn u32(&mut self) -> Result<u32, String> {
        let Some((head, rest)) = self.rest.split_first_chunk::<4>() else {
            return Err(format!(
                "malformed records: {} bytes left where a 4-byte length was expected",
                self.rest.len()
            ));
        };
        self.rest = rest;
        Ok(u32::from_le_bytes(*head))
    }

    /// The next length-prefixed field.
    pub(crate) fn field(&mut self) -> Result<&'a [u8], String> {
        let len = self.u32()? as usize;
        if len > self.rest.len() {
            return Err(format!(
                "malformed records: a field of {len} bytes, with {} bytes left",
                self.rest.len()
            ));
        }
        let (field, rest) = self.rest.split_at(len);
        self.rest = rest;
        Ok(field)
    }
}

/// Key/value pairs, as bytes.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every pair of a string of pair records, or why it is malformed.
#[cfg(not(target_arch = "wasm32"))]
pub(crate) fn pairs(bytes: &[u8]) -> Result<Pairs, String> {
    let mut reader = Reader::new(bytes);
    let mut pairs = Vec::new();
    while !reader.is_empty() {
        let key = reader.field()?.to_vec();
        pairs.push((key, reader.field()?.to_vec()));
    }
    Ok(pairs)
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_truncation_is_an_error() {
        let mut buf = Vec::new();
        put(&mut buf, b"key");
        put(&mut buf, b"");
        field(&mut buf, |b| {
            b.extend_from_slice(b"k2");
            Ok::<(), ()>(())
        })
        .unwrap();
        put(&mut buf, b"value");
        assert_eq!(
            pairs(&buf).unwrap(),
            [
                (b"key".to_vec(), vec![]),
                (b"k2".to_vec(), b"value".to_vec())
            ]
        );
        let err = pairs(&buf[..buf.len() - 1]).unwrap_err();
        assert_eq!(
            err,
            "malformed records: a field of 5 bytes, with 4 bytes left"
        );
        let err = pairs(&buf[..2]).unwrap_err();
        assert!(err.contains("2 bytes left where a 4-byte length"), "{err}");
    }

    #[test]
    fn a_failed_field_appends_nothing() {
        let mut buf = b"x".to_vec();
        assert_eq!(
            field(&mut buf, |b| {
                b.push(1);
                Err("no")
            }),
            Err("no")
        );
        assert_eq!(buf, b"x");
    }
}
