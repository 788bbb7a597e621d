//! Map/reduce tasks: the [`MapReduce`] trait a task implements and the [`Emitter`] it writes to.
//!
//! The host splits the input into chunks of whole lines and calls `map` on each; a task with a
//! combiner ([`MapReduce::HAS_COMBINER`]) runs `combine` per key on the map output inside
//! `map` itself, in guest memory, so only combined pairs cross to the host (see [`Emitter`]).
//! The host shuffles the pairs by key and calls `reduce` once per key with all its values
//! (many keys per call to the guest, each decoded and handed to [`MapReduce::reduce`] in turn).
//! Keys, values and outputs cross the boundary as JSON, so the host groups keys by their JSON
//! bytes: a key type must encode equal keys identically (avoid `HashMap` keys).

use std::borrow::Borrow;
use std::hash::Hash;
use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, host, records};

/// A map/reduce task, exported with [`export_mapreduce!`](crate::export_mapreduce).
///
/// All methods are associated functions: a task keeps no state between calls.
///
/// ```
/// use weft_sdk::{Emitter, Error, MapReduce};
///
/// /// Sums the numbers on each line per first letter.
/// struct SumByLetter;
///
/// impl MapReduce for SumByLetter {
///     type Key = char;
///     type Value = i64;
///     type Output = i64;
///
///     fn map(chunk: &str, out: &mut Emitter<char, i64>) -> Result<(), Error> {
///         for line in chunk.lines() {
///             let (word, n) = line.split_once(' ').ok_or("expected `word number`")?;
///             let n = n.parse().map_err(|e| Error::msg(format!("bad number {n:?}: {e}")))?;
///             out.emit(word.chars().next().unwrap_or(' '), n);
///         }
///         Ok(())
///     }
///
///     fn reduce(key: char, values: Vec<i64>, out: &mut Emitter<char, i64>) -> Result<(), Error> {
///         out.emit(key, values.iter().sum());
///         Ok(())
///     }
/// }
/// weft_sdk::export_mapreduce!(SumByLetter);
///
/// let result = weft_sdk::testing::run_mapreduce::<SumByLetter>("apple 1\navocado 2\nbean 5\n", 2);
/// assert_eq!(result, [('a', 3), ('b', 5)]);
/// ```
pub trait MapReduce {
    /// The key map emits and reduce groups by. A combining map step groups keys by `Eq` in
    /// guest memory, the host by their JSON bytes: equal keys must encode identically.
    /// (`Hash + Eq` is required since weft-sdk for `weft:plugin@0.3.0`: a key holding an
    /// `f64` needs a wrapper that hashes its bits.)
    type Key: Serialize + DeserializeOwned + Clone + Hash + Eq;
    /// The value map and combine emit.
    type Value: Serialize + DeserializeOwned;
    /// The value reduce emits for a key.
    type Output: Serialize + DeserializeOwned;

    /// Whether [`combine`](MapReduce::combine) is worth calling; when `false` (and
    /// [`MapReduce::MERGES`] is `false` too), `map` emits its pairs as they come and nothing
    /// calls `combine`.
    const HAS_COMBINER: bool = false;

    /// Map one chunk of whole lines (ending with `\n` unless it is the end of the input).
    fn map(chunk: &str, out: &mut Emitter<Self::Key, Self::Value>) -> Result<(), Error>;

    /// Map one chunk as the host hands it over: the default checks that it is UTF-8 and calls
    /// [`map`](MapReduce::map). A task whose jobs cut their input into length-prefixed records
    /// (`weft job run --records length-prefixed`: each record a 4-byte little-endian length,
    /// then any bytes, newlines too) implements this instead and reads the records with
    /// [`length_prefixed`]; its `map` is then never called.
    ///
    /// ```
    /// # use weft_sdk::{Emitter, Error, MapReduce};
    /// struct Sizes;
    /// impl MapReduce for Sizes {
    ///     type Key = usize;
    ///     type Value = u64;
    ///     type Output = u64;
    ///     fn map(chunk: &str, out: &mut Emitter<usize, u64>) -> Result<(), Error> {
    ///         Self::map_bytes(chunk.as_bytes(), out)
    ///     }
    ///     fn map_bytes(chunk: &[u8], out: &mut Emitter<usize, u64>) -> Result<(), Error> {
    ///         for record in weft_sdk::mapreduce::length_prefixed(chunk) {
    ///             out.emit(record?.len(), 1);
    ///         }
    ///         Ok(())
    ///     }
    ///     fn reduce(size: usize, counts: Vec<u64>, out: &mut Emitter<usize, u64>) -> Result<(), Error> {
    ///         out.emit(size, counts.iter().sum());
    ///         Ok(())
    ///     }
    /// }
    /// let got = weft_sdk::testing::try_run_records::<Sizes>(&[b"a\n", b""], 1);
    /// assert_eq!(got, Ok(vec![(0, 1), (2, 1)]));
    /// ```
    fn map_bytes(chunk: &[u8], out: &mut Emitter<Self::Key, Self::Value>) -> Result<(), Error> {
        let chunk = std::str::from_utf8(chunk)
            .map_err(|e| Error::msg(format!("map input is not UTF-8: {e}")))?;
        Self::map(chunk, out)
    }

    /// Combine values one map step produced for `key` before the shuffle, emitting fewer
    /// pairs with the same key. It runs inside `map`, on all of the step's values of `key`
    /// or, past 8 MiB held, on part of them at a time, so it must give the same result
    /// however the values are split. The default re-emits every value unchanged.
    ///
    /// ```
    /// # use weft_sdk::{Emitter, Error, MapReduce};
    /// # struct Count;
    /// # impl MapReduce for Count {
    /// #     type Key = String; type Value = u64; type Output = u64;
    /// #     fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    /// #         chunk.lines().for_each(|l| out.emit(l.to_owned(), 1)); Ok(())
    /// #     }
    /// const HAS_COMBINER: bool = true;
    ///
    /// fn combine(key: String, values: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    ///     out.emit(key, values.iter().sum());
    ///     Ok(())
    /// }
    /// #     fn reduce(key: String, values: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    /// #         out.emit(key, values.iter().sum()); Ok(())
    /// #     }
    /// # }
    /// # assert_eq!(weft_sdk::testing::run_mapreduce::<Count>("a\na\n", 1), [("a".to_owned(), 2)]);
    /// ```
    fn combine(
        key: Self::Key,
        values: Vec<Self::Value>,
        out: &mut Emitter<Self::Key, Self::Value>,
    ) -> Result<(), Error> {
        for value in values {
            out.emit(key.clone(), value);
        }
        Ok(())
    }

    /// Whether [`merge`](MapReduce::merge) folds two values of one key into one. When `true`,
    /// a map step holds one value per key and merges each value emitted for the key into it
    /// (as Spark's `reduceByKey` does), instead of holding every value until `combine`:
    /// no list per key, so a map step with many repeated keys runs about twice as fast
    /// (a word count's does) and holds less. `combine` is then never called.
    const MERGES: bool = false;

    /// Merge `value` into `held`, the value a map step holds for their key; only called when
    /// [`MapReduce::MERGES`] is `true` (the default panics, as a reminder to write it).
    /// Values may be merged in any grouping and order, so it must be associative and
    /// commutative, as a sum, a maximum or a set union is. Only new keys count towards the
    /// 8 MiB a map step holds before it hands its pairs on, not a merged value's growth: a
    /// merge whose values grow (a set union) should keep them small.
    ///
    /// ```
    /// # use weft_sdk::{Emitter, Error, MapReduce};
    /// # struct Count;
    /// # impl MapReduce for Count {
    /// #     type Key = String; type Value = u64; type Output = u64;
    /// #     fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    /// #         chunk.lines().for_each(|l| out.emit(l.to_owned(), 1)); Ok(())
    /// #     }
    /// const MERGES: bool = true;
    ///
    /// fn merge(held: &mut u64, value: u64) {
    ///     *held += value;
    /// }
    /// #     fn reduce(key: String, values: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    /// #         out.emit(key, values.iter().sum()); Ok(())
    /// #     }
    /// # }
    /// # assert_eq!(weft_sdk::testing::run_mapreduce::<Count>("a\nb\na\n", 1), [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    /// ```
    fn merge(held: &mut Self::Value, value: Self::Value) {
        let _ = (held, value);
        panic!("this task says MERGES = true but does not implement MapReduce::merge");
    }

    /// Reduce all values of `key` into outputs (usually one).
    fn reduce(
        key: Self::Key,
        values: Vec<Self::Value>,
        out: &mut Emitter<Self::Key, Self::Output>,
    ) -> Result<(), Error>;
}

/// How many bytes of encoded pairs an [`Emitter`] buffers before handing them to the host.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// About how many bytes of map output a combining [`Emitter`] holds before it combines what
/// it holds and hands the result to the host: 8 MiB, counted as each distinct key's JSON
/// bytes (twice, with some bookkeeping) and each value's inline size (`size_of::<V>()`; what
/// a value owns on the heap, such as a `String`'s text, is not counted).
pub(crate) const COMBINE_BYTES: usize = 8 << 20;

/// What a map step emitted, grouped by key, waiting to be combined.
struct Combining<K, V> {
    /// Each key's values. By the key itself, so that a key already held costs a hash and a
    /// comparison, not an encoding.
    groups: std::collections::HashMap<K, Vec<V>, rustc_hash::FxBuildHasher>,
    /// When the task merges: each key's one value, and how to merge another into it.
    merged: std::collections::HashMap<K, V, rustc_hash::FxBuildHasher>,
    merge: Option<fn(&mut V, V)>,
    /// About how many bytes `groups` holds.
    bytes: usize,
    /// The task's `combine`.
    combine: Combine<K, V>,
    /// Scratch space for measuring a new key's encoding.
    scratch: Vec<u8>,
}

type Combine<K, V> = fn(K, Vec<V>, &mut Emitter<K, V>) -> Result<(), Error>;

/// Collects a step's output and passes it to the host in batches of about 64 KiB.
///
/// In `map`, a task with a combiner ([`MapReduce::HAS_COMBINER`]) gets an emitter that groups
/// pairs by key in guest memory and runs [`MapReduce::combine`] on each group when the map
/// step ends, or earlier whenever it holds about 8 MiB of keys and values (see
/// `COMBINE_BYTES`; so `combine` may see a key's values in several parts, as combiners do
/// in every map/reduce). Only the combined pairs cross to the host: for a word count, one
/// pair per distinct word of a chunk (or of each 8 MiB part) instead of one per word.
/// Values reach `combine` as emitted, without a JSON round trip; an error from `combine`
/// fails the map step, within the map call's time limit.
///
/// ```
/// # use weft_sdk::{Emitter, Error, MapReduce};
/// # struct Lines;
/// # impl MapReduce for Lines {
/// #     type Key = String; type Value = u64; type Output = u64;
/// fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
///     for line in chunk.lines() {
///         out.emit(line.to_owned(), line.len() as u64);
///     }
///     Ok(())
/// }
/// #     fn reduce(key: String, values: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
/// #         out.emit(key, values[0]); Ok(())
/// #     }
/// # }
/// ```
pub struct Emitter<K, V> {
    /// Pair records (`crate::records`) waiting to go to the host.
    batch: Vec<u8>,
    /// The first encoding error; it fails the step when it ends.
    error: Option<Error>,
    /// In a combining map step: what waits to be combined.
    combining: Option<Combining<K, V>>,
    _pairs: PhantomData<fn(K, V)>,
}

impl<K: Serialize + Hash + Eq, V: Serialize> Emitter<K, V> {
    pub(crate) fn new() -> Self {
        Emitter {
            batch: Vec::new(),
            error: None,
            combining: None,
            _pairs: PhantomData,
        }
    }

    /// An emitter that groups pairs by key and runs `combine` on the groups before they go
    /// to the host.
    pub(crate) fn combining(combine: Combine<K, V>) -> Self {
        Emitter {
            combining: Some(Combining {
                groups: Default::default(),
                merged: Default::default(),
                merge: None,
                bytes: 0,
                combine,
                scratch: Vec::new(),
            }),
            ..Emitter::new()
        }
    }

    /// An emitter that holds one value per key, merging each new value of the key into it,
    /// and hands the merged pairs to the host.
    pub(crate) fn merging(merge: fn(&mut V, V)) -> Self {
        let mut emitter =
            Self::combining(|_, _, _| unreachable!("a merging step holds no lists of values"));
        if let Some(c) = emitter.combining.as_mut() {
            c.merge = Some(merge);
        }
        emitter
    }

    /// Emit one pair. Encoding errors are reported when the step ends.
    ///
    /// ```
    /// # use weft_sdk::{Emitter, Error, MapReduce};
    /// # struct T;
    /// # impl MapReduce for T {
    /// #     type Key = String; type Value = u64; type Output = u64;
    /// fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    ///     out.emit("lines".to_owned(), chunk.lines().count() as u64);
    ///     Ok(())
    /// }
    /// #     fn reduce(key: String, values: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    /// #         out.emit(key, values.iter().sum()); Ok(())
    /// #     }
    /// # }
    /// # assert_eq!(weft_sdk::testing::run_mapreduce::<T>("a\nb\n", 1), [("lines".to_owned(), 2)]);
    /// ```
    pub fn emit(&mut self, key: K, value: V) {
        if self.error.is_some() {
            return;
        }
        if self.combining.is_some() {
            if let Some(value) = self.push_existing(&key, value) {
                self.insert_new(key, value);
            }
            return;
        }
        self.encode(&key, &value);
    }

    /// Emit one pair, with a borrowed key: in a combining map step the key is copied only
    /// when it is new among the pairs held (the first time it is seen, and again after each
    /// 8 MiB combine), so a map that builds each key in a reused buffer allocates no key per
    /// pair. Outside a combining step it is the same as [`Emitter::emit`]. `Q` must encode
    /// to the same JSON as `K` (as `str` and `String` do): the host decodes it as `K`.
    /// Encoding errors are reported when the step ends.
    ///
    /// ```
    /// # use weft_sdk::{Emitter, Error, MapReduce};
    /// # struct T;
    /// # impl MapReduce for T {
    /// #     type Key = String; type Value = u64; type Output = u64;
    /// # const HAS_COMBINER: bool = true;
    /// fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    ///     let mut word = String::new();
    ///     for w in chunk.split_whitespace() {
    ///         word.clear();
    ///         word.push_str(w);
    ///         word.make_ascii_lowercase();
    ///         out.emit_ref(word.as_str(), 1);
    ///     }
    ///     Ok(())
    /// }
    /// # fn combine(k: String, v: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    /// #     out.emit(k, v.iter().sum()); Ok(())
    /// # }
    /// #     fn reduce(key: String, values: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
    /// #         out.emit(key, values.iter().sum()); Ok(())
    /// #     }
    /// # }
    /// # assert_eq!(weft_sdk::testing::run_mapreduce::<T>("A a\nb\n", 1), [("a".to_owned(), 2), ("b".to_owned(), 1)]);
    /// ```
    pub fn emit_ref<Q>(&mut self, key: &Q, value: V)
    where
        Q: Serialize + Hash + Eq + ToOwned<Owned = K> + ?Sized,
        K: Borrow<Q>,
    {
        if self.error.is_some() {
            return;
        }
        if self.combining.is_some() {
            if let Some(value) = self.push_existing(key, value) {
                self.insert_new(key.to_owned(), value);
            }
            return;
        }
        self.encode(key, &value);
    }

    /// In a combining step: adds `value` to the group of `key` if it has one; gives `value`
    /// back if the key is new (then [`Emitter::insert_new`] adds it).
    fn push_existing<Q>(&mut self, key: &Q, value: V) -> Option<V>
    where
        Q: Hash + Eq + ?Sized,
        K: Borrow<Q>,
    {
        let c = self.combining.as_mut().expect("a combining step");
        if let Some(merge) = c.merge {
            return match c.merged.get_mut(key) {
                Some(held) => {
                    merge(held, value);
                    None
                }
                None => Some(value),
            };
        }
        match c.groups.get_mut(key) {
            Some(values) => {
                values.push(value);
                c.bytes += std::mem::size_of::<V>();
                if c.bytes >= COMBINE_BYTES {
                    self.combine_held();
                }
                None
            }
            None => Some(value),
        }
    }

    /// In a combining step: starts the group of a new key. An encoding error is recorded,
    /// and the pair dropped.
    fn insert_new(&mut self, key: K, value: V) {
        let c = self.combining.as_mut().expect("a combining step");
        c.scratch.clear();
        if let Err(e) = serde_json::to_writer(&mut c.scratch, &key) {
            self.error = Some(e.into());
            return;
        }
        // The key twice (typed, and encoded when combined), the map's entry, the values.
        c.bytes += 2 * c.scratch.len() + 64 + std::mem::size_of::<V>();
        if c.merge.is_some() {
            c.merged.insert(key, value);
        } else {
            c.groups.insert(key, vec![value]);
        }
        if c.bytes >= COMBINE_BYTES {
            self.combine_held();
        }
    }

    /// Outside a combining step: encodes the pair into the batch for the host.
    fn encode<Q: Serialize + ?Sized>(&mut self, key: &Q, value: &V) {
        let at = self.batch.len();
        let encoded = records::field(&mut self.batch, |b| serde_json::to_writer(b, key))
            .and_then(|()| records::field(&mut self.batch, |b| serde_json::to_writer(b, value)));
        if let Err(e) = encoded {
            self.batch.truncate(at);
            self.error = Some(e.into());
        } else if self.batch.len() >= BATCH_BYTES {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            host::emit(&self.batch);
            self.batch.clear();
        }
    }

    /// Runs `combine` on every group held, emitting its output to the host.
    fn combine_held(&mut self) {
        let Some(mut c) = self.combining.take() else {
            return;
        };
        for (key, value) in c.merged.drain() {
            if self.error.is_some() {
                break;
            }
            self.encode(&key, &value);
        }
        for (key, values) in c.groups.drain() {
            if self.error.is_some() {
                break;
            }
            if let Err(e) = (c.combine)(key, values, self) {
                self.error = Some(e);
            }
        }
        c.bytes = 0;
        self.combining = Some(c);
    }

    /// Flush what is left, or report the first encoding error.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        self.combine_held();
        match self.error.take() {
            Some(error) => Err(error),
            None => {
                self.flush();
                Ok(())
            }
        }
    }
}

/// The records of a chunk of length-prefixed records (each a 4-byte little-endian length,
/// then that many bytes), in order; a chunk that ends inside a record yields an error last.
///
/// ```
/// let chunk = b"\x03\0\0\0a\nb\x00\0\0\0";
/// let records: Vec<&[u8]> = weft_sdk::mapreduce::length_prefixed(chunk)
///     .collect::<Result<_, _>>()
///     .unwrap();
/// assert_eq!(records, [&b"a\nb"[..], &b""[..]]);
/// assert!(weft_sdk::mapreduce::length_prefixed(b"\x09\0\0\0ab").last().unwrap().is_err());
/// ```
pub fn length_prefixed(chunk: &[u8]) -> LengthPrefixed<'_> {
    LengthPrefixed { rest: chunk }
}

/// The iterator of [`length_prefixed`].
#[derive(Debug, Clone)]
pub struct LengthPrefixed<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for LengthPrefixed<'a> {
    type Item = Result<&'a [u8], Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let whole = self.rest.len();
        let record = self.rest.get(..4).and_then(|len| {
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            self.rest.get(4..4 + len)
        });
        match record {
            Some(r) => {
                self.rest = &self.rest[4 + r.len()..];
                Some(Ok(r))
            }
            None => {
                self.rest = &[];
                Some(Err(Error::msg(format!(
                    "the chunk ends inside a length-prefixed record ({whole} bytes left)"
                ))))
            }
        }
    }
}
