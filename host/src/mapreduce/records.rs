//! Map output on the host, as bytes: the pair and group records that cross the guest
//! boundary (`weft:plugin/emit` in `sdk/wit`; every length a `u32`, little-endian), the
//! sorted runs a map task's output is cut into (one per reducer partition), and the merge of
//! a partition's runs into group records for `reduce`. No I/O of its own: a [`Cursor`] reads
//! whatever it is given (memory, or a spilled run's file).
//!
//! Nothing here allocates per pair: a run is one byte string, sorting moves offsets, and the
//! merge copies each pair into buffers it reuses.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::plan::partition;

/// Reads records from the front of a byte string.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads `bytes` from the start.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { rest: bytes }
    }

    /// Whether every record was read.
    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next length or count.
    pub fn u32(&mut self) -> Result<u32, String> {
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
    pub fn field(&mut self) -> Result<&'a [u8], String> {
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

    /// The next pair record: key and value.
    pub fn pair(&mut self) -> Result<Pair<'a>, String> {
        Ok((self.field()?, self.field()?))
    }
}

/// Appends a length-prefixed field.
pub fn put(buf: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a field fits in 4 GiB");
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
}

/// A key and its value, borrowed from records.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Every pair of a string of pair records, or why it is malformed.
pub fn pairs(bytes: &[u8]) -> Result<Vec<Pair<'_>>, String> {
    let mut reader = Reader::new(bytes);
    let mut pairs = Vec::new();
    while !reader.is_empty() {
        pairs.push(reader.pair()?);
    }
    Ok(pairs)
}

/// Pair records sorted by key (bytewise; a key's values in the order they were emitted), as
/// one map task left them for one reducer partition.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    bytes: Vec<u8>,
    pairs: usize,
}

impl Run {
    /// A run received whole (from another node), of well-formed sorted records (checked as
    /// they are read); its pair count is not known (0).
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Run { bytes, pairs: 0 }
    }

    /// The run's pair records.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many pairs it holds.
    pub fn pairs(&self) -> usize {
        self.pairs
    }
}

/// Cuts pair records into `partitions` sorted runs (partition `p`'s run at index `p`).
/// The records are checked first: an error says what is malformed and nothing is cut.
/// Besides the runs (as many bytes as the records), it holds a 4-byte offset per pair, one
/// partition's worth at a time while it sorts.
pub fn sorted_runs(records: &[u8], partitions: u32) -> Result<Vec<Run>, String> {
    if u32::try_from(records.len()).is_err() {
        return Err(format!(
            "{} bytes of records in one step, more than the 4 GiB a step may emit",
            records.len()
        ));
    }
    let partitions = partitions.max(1);
    // Each pair's record offset, by partition.
    let mut index: Vec<Vec<u32>> = vec![Vec::new(); partitions as usize];
    let mut reader = Reader::new(records);
    while !reader.is_empty() {
        let start = records.len() - reader.rest.len();
        let key = reader.field()?;
        reader.field()?;
        let p = if partitions == 1 {
            0
        } else {
            partition(key, partitions)
        };
        index[p as usize].push(start as u32);
    }
    // The records are well formed from here on, so reading one at an offset cannot fail.
    let key_at = |at: u32| {
        let mut r = Reader::new(&records[at as usize..]);
        r.field().expect("checked above")
    };
    let record_len = |at: u32| {
        let mut r = Reader::new(&records[at as usize..]);
        r.pair().expect("checked above");
        records.len() - at as usize - r.rest.len()
    };
    let mut runs = Vec::with_capacity(index.len());
    for mut offsets in index {
        // Stable, so equal keys keep their order.
        offsets.sort_by(|a, b| key_at(*a).cmp(key_at(*b)));
        // Sized exactly: the node counts a run's length against its memory budget.
        let mut bytes = Vec::with_capacity(offsets.iter().map(|at| record_len(*at)).sum());
        for at in &offsets {
            let at = *at as usize;
            bytes.extend_from_slice(&records[at..at + record_len(at as u32)]);
        }
        runs.push(Run {
            bytes,
            pairs: offsets.len(),
        });
    }
    Ok(runs)
}

/// Reads one run's pairs in order, one at a time, into buffers it reuses: from memory, or
/// from a spilled run's file through a small buffer.
pub struct Cursor<'a> {
    reader: Box<dyn std::io::Read + Send + 'a>,
    /// The current pair's value.
    value: Vec<u8>,
}

impl<'a> Cursor<'a> {
    /// Reads pair records from `reader`.
    pub fn new(reader: impl std::io::Read + Send + 'a) -> Self {
        Cursor {
            reader: Box::new(reader),
            value: Vec::new(),
        }
    }

    /// Reads the next pair: its key into `key`, its value into the cursor. `Ok(false)` at the
    /// end of the run.
    fn next(&mut self, key: &mut Vec<u8>) -> Result<bool, String> {
        let mut len = [0; 4];
        loop {
            match self.reader.read(&mut len[..1]) {
                Ok(0) => return Ok(false),
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading a run: {e}")),
            }
        }
        let read = |reader: &mut Box<dyn std::io::Read + Send + 'a>, buf: &mut [u8]| {
            reader
                .read_exact(buf)
                .map_err(|e| format!("reading a run: {e} (truncated?)"))
        };
        read(&mut self.reader, &mut len[1..])?;
        key.resize(u32::from_le_bytes(len) as usize, 0);
        read(&mut self.reader, key)?;
        read(&mut self.reader, &mut len)?;
        self.value.resize(u32::from_le_bytes(len) as usize, 0);
        read(&mut self.reader, &mut self.value)?;
        Ok(true)
    }
}

/// Merges sorted runs into group records: each key once, in ascending byte order, with every
/// value it has in any run (a key's values in run order, then in each run's order). It holds
/// one pair per run, in buffers it reuses.
pub struct Merge<'a> {
    cursors: Vec<Cursor<'a>>,
    /// The current key of each run that has one, and the run, ordered by key, then run.
    heads: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    /// Key buffers to reuse.
    spare: Vec<Vec<u8>>,
}

impl<'a> Merge<'a> {
    /// Merges `runs` (each as [`sorted_runs`] made it) held in memory.
    pub fn new(runs: impl IntoIterator<Item = &'a Run>) -> Self {
        Self::of(runs.into_iter().map(|r| Cursor::new(r.bytes())).collect())
            .expect("reading memory cannot fail, and runs hold whole records")
    }

    /// Merges the runs `cursors` read.
    pub fn of(cursors: Vec<Cursor<'a>>) -> Result<Self, String> {
        let mut merge = Merge {
            heads: BinaryHeap::with_capacity(cursors.len()),
            cursors,
            spare: Vec::new(),
        };
        for run in 0..merge.cursors.len() {
            merge.advance(run, Vec::new())?;
        }
        Ok(merge)
    }

    /// Moves run `run` to its next pair, reading its key into `key`.
    fn advance(&mut self, run: usize, mut key: Vec<u8>) -> Result<(), String> {
        if self.cursors[run].next(&mut key)? {
            self.heads.push(Reverse((key, run)));
        } else {
            self.spare.push(key);
        }
        Ok(())
    }

    /// Replaces `out` with whole groups, until it holds at least `target` bytes or the runs
    /// are exhausted; returns how many groups it holds (0: none was left). A key with 2^32
    /// values or more cannot be one group: that is an error, as is a run that cannot be read.
    pub fn next_groups(&mut self, out: &mut Vec<u8>, target: usize) -> Result<usize, String> {
        out.clear();
        let mut groups = 0;
        while out.len() < target {
            let Some(Reverse((key, run))) = self.heads.pop() else {
                break;
            };
            put(out, &key);
            let count_at = out.len();
            out.extend_from_slice(&[0; 4]);
            put(out, &self.cursors[run].value);
            let mut count: u64 = 1;
            let spare = self.spare.pop().unwrap_or_default();
            self.advance(run, spare)?;
            while let Some(Reverse((next, _))) = self.heads.peek()
                && *next == key
            {
                let Reverse((same, run)) = self.heads.pop().expect("peeked");
                put(out, &self.cursors[run].value);
                count += 1;
                self.advance(run, same)?;
            }
            self.spare.push(key);
            let count = u32::try_from(count).map_err(|_| {
                format!("a key has {count} values, more than one group may carry (2^32 - 1)")
            })?;
            out[count_at..count_at + 4].copy_from_slice(&count.to_le_bytes());
            groups += 1;
        }
        Ok(groups)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in pairs {
            put(&mut out, k.as_bytes());
            put(&mut out, v.as_bytes());
        }
        out
    }

    /// Group records back as (key, values) strings.
    fn groups(bytes: &[u8]) -> Vec<(String, Vec<String>)> {
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
        let mut reader = Reader::new(bytes);
        let mut out = Vec::new();
        while !reader.is_empty() {
            let key = text(reader.field().unwrap());
            let values = (0..reader.u32().unwrap())
                .map(|_| text(reader.field().unwrap()))
                .collect();
            out.push((key, values));
        }
        out
    }

    fn check_merge(runs: &[&[(&str, &str)]], target: usize, expected: &[&[(&str, &[&str])]]) {
        let runs: Vec<Run> = runs
            .iter()
            .map(|r| sorted_runs(&records(r), 1).unwrap().remove(0))
            .collect();
        let mut merge = Merge::new(&runs);
        let mut batches = Vec::new();
        loop {
            let mut out = b"left over".to_vec();
            let n = merge.next_groups(&mut out, target).unwrap();
            if n == 0 {
                assert!(out.is_empty());
                break;
            }
            let got = groups(&out);
            assert_eq!(got.len(), n);
            batches.push(got);
        }
        let expected: Vec<Vec<(String, Vec<String>)>> = expected
            .iter()
            .map(|b| {
                b.iter()
                    .map(|(k, vs)| (k.to_string(), vs.iter().map(|v| v.to_string()).collect()))
                    .collect()
            })
            .collect();
        assert_eq!(batches, expected, "runs {runs:?}");
    }

    #[test]
    fn merge_groups_every_key_once_in_order_across_runs() {
        check_merge(&[], 100, &[]);
        check_merge(&[&[], &[]], 100, &[]);
        check_merge(
            &[
                &[("b", "1"), ("a", "2"), ("b", "3")],
                &[("c", "4"), ("a", "5")],
                &[("b", "6")],
            ],
            1 << 20,
            &[&[("a", &["2", "5"]), ("b", &["1", "3", "6"]), ("c", &["4"])]],
        );
        // A small target: a batch ends after the group that reaches it, never inside one.
        check_merge(
            &[&[("a", "1"), ("b", "2")], &[("a", "3"), ("c", "4")]],
            1,
            &[&[("a", &["1", "3"])], &[("b", &["2"])], &[("c", &["4"])]],
        );
    }

    #[test]
    fn runs_are_sorted_per_partition_and_keep_every_pair() {
        let input: Vec<(String, String)> = (0..500)
            .map(|i| (format!("k{}", (i * 7919) % 97), i.to_string()))
            .collect();
        let pairs_in: Vec<(&str, &str)> = input
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let runs = sorted_runs(&records(&pairs_in), 4).unwrap();
        assert_eq!(runs.len(), 4);
        let mut seen = Vec::new();
        for (p, run) in runs.iter().enumerate() {
            let got = pairs(run.bytes()).unwrap();
            assert_eq!(got.len(), run.pairs());
            for w in got.windows(2) {
                assert!(w[0].0 <= w[1].0, "run {p} is not sorted");
                if w[0].0 == w[1].0 {
                    let (a, b): (u32, u32) = (
                        std::str::from_utf8(w[0].1).unwrap().parse().unwrap(),
                        std::str::from_utf8(w[1].1).unwrap().parse().unwrap(),
                    );
                    assert!(a < b, "equal keys lost their order in run {p}");
                }
            }
            for (k, v) in got {
                assert_eq!(partition(k, 4) as usize, p, "key in the wrong partition");
                seen.push((k.to_vec(), v.to_vec()));
            }
        }
        let mut expected: Vec<(Vec<u8>, Vec<u8>)> = input
            .iter()
            .map(|(k, v)| (k.clone().into_bytes(), v.clone().into_bytes()))
            .collect();
        seen.sort();
        expected.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn malformed_records_are_refused_whole() {
        let mut bytes = records(&[("key", "value")]);
        bytes.extend_from_slice(&[9, 0, 0, 0, b'x']);
        assert_eq!(
            sorted_runs(&bytes, 2).unwrap_err(),
            "malformed records: a field of 9 bytes, with 1 bytes left"
        );
        assert_eq!(
            sorted_runs(&[1, 0], 1).unwrap_err(),
            "malformed records: 2 bytes left where a 4-byte length was expected"
        );
        // A key with no value.
        let mut bytes = Vec::new();
        put(&mut bytes, b"key");
        assert!(sorted_runs(&bytes, 1).unwrap_err().contains("0 bytes left"));
    }
}
