//! Pure planning: splitting input on record boundaries into content-addressed chunks, and
//! assigning keys to reducer partitions. No I/O.

use bytes::{Bytes, BytesMut};

use crate::id::Digest;

/// Default target chunk size, one map task's input: 4 MiB (`weft job run --chunk-size`).
/// Larger chunks combine more of the map output before the shuffle (a word count's 4 MiB
/// chunk emits about as many distinct words as a 1 MiB one) and cost fewer task starts;
/// smaller ones spread a small input over more tasks. Records are never split, so a chunk
/// may be larger when one record is.
pub const CHUNK_BYTES: usize = 4 << 20;

/// The smallest target chunk size a job may ask for.
pub const MIN_CHUNK_BYTES: usize = 64 << 10;

/// The largest target chunk size a job may ask for (the largest chunk upload).
pub const MAX_CHUNK_BYTES: usize = 64 << 20;

/// Parses a chunk size: bytes, or a number with `KiB`, `MiB` or `GiB` (`4MiB`), within
/// [`MIN_CHUNK_BYTES`] and [`MAX_CHUNK_BYTES`].
pub fn parse_chunk_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    if unit.starts_with('.') || unit.starts_with(',') {
        return Err(format!(
            "chunk size {s:?} must be a whole number of bytes, KiB, MiB or GiB"
        ));
    }
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" | "K" | "k" => 10,
        "MiB" | "M" => 20,
        "GiB" | "G" => 30,
        other => {
            return Err(format!(
                "unknown unit {other:?} in chunk size {s:?}: use bytes, KiB, MiB or GiB"
            ));
        }
    };
    let bytes = number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("chunk size {s:?} is not a size such as 4MiB"))?;
    if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&bytes) {
        return Err(format!(
            "chunk size {s:?} must be between 64KiB and 64MiB ({bytes} bytes asked)"
        ));
    }
    Ok(bytes)
}

/// One map task's input: whole records (newline-terminated lines; the last may lack the newline).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// blake3 of the bytes.
    pub digest: Digest,
    /// The records.
    pub bytes: Bytes,
}

impl Chunk {
    fn new(bytes: Bytes) -> Self {
        Chunk {
            digest: Digest::of(&bytes),
            bytes,
        }
    }
}

/// A chunk of a job's input as the job knows it: stored as a blob, read by the map task that
/// takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputChunk {
    /// blake3 of its bytes: its blob.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
}

impl Chunk {
    /// The chunk as a job refers to it.
    pub fn input(&self) -> InputChunk {
        InputChunk {
            digest: self.digest,
            size: self.bytes.len() as u64,
        }
    }
}

/// Cuts a stream of input into chunks of about `target` bytes, each ending at a record boundary.
#[derive(Debug)]
pub struct Chunker {
    target: usize,
    records: Records,
    pending: BytesMut,
    /// Lines: how much of `pending` past `target` is known to hold no newline, so a long
    /// record is scanned once rather than on every push. Length-prefixed: where the next
    /// record starts (all before it are whole records).
    scanned: usize,
}

/// How a job's input is cut into records (a chunk always holds whole records).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Records {
    /// Lines, each ending with `\n` (the last one of the input may not).
    #[default]
    Lines,
    /// Each record is its length as an unsigned 32-bit little-endian integer, then that many
    /// bytes (any bytes, newlines and all).
    LengthPrefixed,
}

impl std::str::FromStr for Records {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lines" => Ok(Records::Lines),
            "length-prefixed" => Ok(Records::LengthPrefixed),
            other => Err(format!(
                "`{other}` is not a kind of records: use `lines` or `length-prefixed`"
            )),
        }
    }
}

/// How an input is cut into chunks: their target size and what a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cut {
    /// Target bytes per chunk.
    pub size: usize,
    /// What a record is.
    pub records: Records,
}

impl Cut {
    /// Lines, in chunks of about `size` bytes.
    pub fn lines(size: usize) -> Self {
        Cut {
            size,
            records: Records::Lines,
        }
    }

    /// A chunker that cuts this way.
    pub fn chunker(self) -> Chunker {
        Chunker::of(self.size, self.records)
    }
}

/// Input that ends inside a length-prefixed record.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the input ends inside a length-prefixed record: {left} bytes after the last whole record (each record is a 4-byte little-endian length, then that many bytes)"
)]
pub struct CutRecord {
    /// Bytes left after the last whole record.
    pub left: usize,
}

impl Chunker {
    /// A chunker of lines aiming at `target` bytes per chunk.
    pub fn new(target: usize) -> Self {
        Chunker::of(target, Records::Lines)
    }

    /// A chunker of `records` aiming at `target` bytes per chunk.
    pub fn of(target: usize, records: Records) -> Self {
        Chunker {
            target: target.max(1),
            records,
            pending: BytesMut::new(),
            scanned: 0,
        }
    }

    /// Whether the input so far ends with a whole record (always, for lines: a line may end
    /// with the input).
    pub fn at_boundary(&self) -> bool {
        self.records == Records::Lines || self.scanned == self.pending.len()
    }

    /// Feeds more input; returns the chunks that are complete.
    pub fn push(&mut self, data: &[u8]) -> Vec<Chunk> {
        self.pending.extend_from_slice(data);
        if self.records == Records::LengthPrefixed {
            return self.cut_length_prefixed();
        }
        let mut out = Vec::new();
        while self.pending.len() >= self.target {
            // Cut after the last newline at or before the target, or else after the first one
            // past it (a record longer than the target).
            let before_target = if self.scanned < self.target {
                self.pending[..self.target]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map(|i| i + 1)
            } else {
                None
            };
            let cut = match before_target {
                Some(cut) => cut,
                None => {
                    let from = self.scanned.max(self.target);
                    match self.pending[from..].iter().position(|&b| b == b'\n') {
                        Some(i) => from + i + 1,
                        None => {
                            self.scanned = self.pending.len();
                            break;
                        }
                    }
                }
            };
            out.push(Chunk::new(self.pending.split_to(cut).freeze()));
            self.scanned = 0;
        }
        out
    }

    /// Length-prefixed records: a chunk ends after the first whole record that reaches the
    /// target (so a record longer than the target makes a chunk of its own).
    fn cut_length_prefixed(&mut self) -> Vec<Chunk> {
        let mut out = Vec::new();
        while self.scanned + 4 <= self.pending.len() {
            let at = self.scanned;
            let len = u32::from_le_bytes(self.pending[at..at + 4].try_into().expect("4 bytes"));
            let end = at + 4 + len as usize;
            if end > self.pending.len() {
                break;
            }
            self.scanned = end;
            if self.scanned >= self.target {
                out.push(Chunk::new(self.pending.split_to(self.scanned).freeze()));
                self.scanned = 0;
            }
        }
        out
    }

    /// Ends the input; returns the last chunk, if any input is left, or an error if the input
    /// ends inside a length-prefixed record.
    pub fn finish(self) -> Result<Option<Chunk>, CutRecord> {
        if !self.at_boundary() {
            return Err(CutRecord {
                left: self.pending.len() - self.scanned,
            });
        }
        Ok((!self.pending.is_empty()).then(|| Chunk::new(self.pending.freeze())))
    }
}

/// Encodes `records` as length-prefixed records.
pub fn length_prefixed<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let len = u32::try_from(r.len()).expect("a record fits in 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The reducer partition of `key`, stable across nodes, runs and versions: FNV-1a (64-bit) of
/// its bytes, mixed by splitmix64's finalizer (FNV's low bits depend only on the bytes' low
/// bits), modulo the partitions. Cheap for the short keys map output is made of; keys chosen
/// to collide can only unbalance their own job.
pub fn partition(key: &[u8], reducers: u32) -> u32 {
    let mut h = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    (h % u64::from(reducers.max(1))) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_parse_with_units_and_stay_in_range() {
        assert_eq!(parse_chunk_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_chunk_size("512 KiB"), Ok(512 << 10));
        assert_eq!(parse_chunk_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_chunk_size("64M"), Ok(64 << 20));
        let err = parse_chunk_size("4 parsecs").unwrap_err();
        assert!(err.contains("unknown unit \"parsecs\""), "{err}");
        let err = parse_chunk_size("1KiB").unwrap_err();
        assert!(err.contains("between 64KiB and 64MiB"), "{err}");
        assert!(parse_chunk_size("1GiB").is_err());
        assert!(parse_chunk_size("MiB").is_err());
        let err = parse_chunk_size("4.5MiB").unwrap_err();
        assert!(err.contains("whole number"), "{err}");
        assert!(parse_chunk_size("99999999999999999999GiB").is_err());
    }

    fn chunks(input: &[u8], target: usize, feed: usize) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(target);
        let mut out: Vec<Vec<u8>> = Vec::new();
        for piece in input.chunks(feed.max(1)) {
            out.extend(c.push(piece).into_iter().map(|c| c.bytes.to_vec()));
        }
        out.extend(c.finish().unwrap().map(|c| c.bytes.to_vec()));
        out
    }

    #[test]
    fn length_prefixed_records_are_cut_whole_and_a_cut_record_is_an_error() {
        let records: Vec<&[u8]> = vec![b"a\nb", b"", b"ccccc", b"d", b"\n\n\n"];
        let input = length_prefixed(records.iter().copied());
        for target in [1, 5, 9, 100] {
            for feed in [1, 3, input.len()] {
                let mut c = Chunker::of(target, Records::LengthPrefixed);
                let mut got: Vec<Vec<u8>> = Vec::new();
                for piece in input.chunks(feed) {
                    got.extend(c.push(piece).into_iter().map(|c| c.bytes.to_vec()));
                }
                assert!(c.at_boundary());
                got.extend(c.finish().unwrap().map(|c| c.bytes.to_vec()));
                // Nothing lost, each chunk whole records, each at least the target but its last.
                assert_eq!(got.concat(), input, "target {target} feed {feed}");
                let mut decoded = Vec::new();
                for (i, chunk) in got.iter().enumerate() {
                    let mut at = 0;
                    let mut last = 0;
                    while at < chunk.len() {
                        let len =
                            u32::from_le_bytes(chunk[at..at + 4].try_into().unwrap()) as usize;
                        decoded.push(chunk[at + 4..at + 4 + len].to_vec());
                        last = at;
                        at += 4 + len;
                    }
                    assert_eq!(at, chunk.len(), "a chunk ends on a record's end");
                    if i + 1 < got.len() {
                        assert!(
                            chunk.len() >= target && last < target.max(1),
                            "target {target}: {chunk:?}"
                        );
                    }
                }
                assert_eq!(
                    decoded,
                    records.iter().map(|r| r.to_vec()).collect::<Vec<_>>()
                );
            }
        }
        let mut c = Chunker::of(100, Records::LengthPrefixed);
        assert!(c.push(&input[..input.len() - 2]).is_empty());
        assert!(!c.at_boundary());
        assert_eq!(c.finish().unwrap_err(), CutRecord { left: 5 });
        let mut c = Chunker::of(100, Records::LengthPrefixed);
        c.push(&[7, 0]);
        assert_eq!(c.finish().unwrap_err(), CutRecord { left: 2 });
        assert_eq!("length-prefixed".parse(), Ok(Records::LengthPrefixed));
        assert!("csv".parse::<Records>().unwrap_err().contains("`csv`"));
    }

    #[test]
    fn chunks_end_on_record_boundaries_and_lose_nothing() {
        let check = |input: &str, target: usize, expected: &[&str]| {
            for feed in [1, 3, input.len().max(1)] {
                let got = chunks(input.as_bytes(), target, feed);
                let got: Vec<&str> = got
                    .iter()
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect();
                assert_eq!(got, expected, "input {input:?} target {target} feed {feed}");
            }
        };
        check("", 4, &[]);
        check("a\nb\nc\n", 4, &["a\nb\n", "c\n"]);
        check("a\nb\nc", 4, &["a\nb\n", "c"]);
        check("abcdefg\nh\n", 4, &["abcdefg\n", "h\n"]);
        check("abcdefg", 4, &["abcdefg"]);
        check("ab\ncd\nef\n", 3, &["ab\n", "cd\n", "ef\n"]);
    }

    #[test]
    fn chunk_digests_address_content() {
        let c = chunks(b"x\ny\n", 2, 4);
        assert_eq!(c.len(), 2);
        let mut ch = Chunker::new(2);
        let got = ch.push(b"x\ny\n");
        assert_eq!(got[0].digest, Digest::of(b"x\n"));
    }

    #[test]
    fn partitions_are_in_range_and_spread() {
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let p = partition(format!("key{i}").as_bytes(), 4);
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|&n| n > 800), "{counts:?}");
        // Keys that differ only in high bits of their bytes spread too.
        let mut counts = [0u32; 4];
        for i in 0..4000u32 {
            let key: Vec<u8> = i.to_le_bytes().iter().map(|b| b & 0xfc).collect();
            counts[partition(&key, 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&n| n > 300), "{counts:?}");
        assert_eq!(partition(b"k", 1), 0);
        assert_eq!(partition(b"k", 0), 0);
    }
}
