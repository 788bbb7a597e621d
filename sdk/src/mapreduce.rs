//! Map/reduce tasks: the [`MapReduce`] trait a task implements and the [`Emitter`] it writes to.
//!
//! The host splits the input into chunks of whole lines and calls `map` on each, then `combine`
//! per key on one chunk's output (only if [`MapReduce::HAS_COMBINER`]), shuffles by key, and
//! calls `reduce` once per key with all its values.
//! Keys, values and outputs cross the boundary as JSON, so the host groups keys by their JSON
//! bytes: a key type must encode equal keys identically (avoid `HashMap` keys).

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, host};

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
    /// The key map emits and reduce groups by.
    type Key: Serialize + DeserializeOwned + Clone;
    /// The value map and combine emit.
    type Value: Serialize + DeserializeOwned;
    /// The value reduce emits for a key.
    type Output: Serialize + DeserializeOwned;

    /// Whether [`combine`](MapReduce::combine) is worth calling; when `false` the host skips it.
    const HAS_COMBINER: bool = false;

    /// Map one chunk of whole lines (ending with `\n` unless it is the end of the input).
    fn map(chunk: &str, out: &mut Emitter<Self::Key, Self::Value>) -> Result<(), Error>;

    /// Combine the values one chunk produced for `key` before the shuffle, emitting fewer pairs
    /// with the same key. The default re-emits every value unchanged.
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

    /// Reduce all values of `key` into outputs (usually one).
    fn reduce(
        key: Self::Key,
        values: Vec<Self::Value>,
        out: &mut Emitter<Self::Key, Self::Output>,
    ) -> Result<(), Error>;
}

/// How many bytes of encoded pairs an [`Emitter`] buffers before handing them to the host.
pub(crate) const BATCH_BYTES: usize = 64 * 1024;

/// Collects a step's output and passes it to the host in batches of about 64 KiB, so a guest
/// never holds a whole chunk's output.
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
    batch: Vec<(Vec<u8>, Vec<u8>)>,
    batch_bytes: usize,
    /// The first encoding error; it fails the step when it ends.
    error: Option<Error>,
    _pairs: PhantomData<fn(K, V)>,
}

impl<K: Serialize, V: Serialize> Emitter<K, V> {
    pub(crate) fn new() -> Self {
        Emitter {
            batch: Vec::new(),
            batch_bytes: 0,
            error: None,
            _pairs: PhantomData,
        }
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
        match (serde_json::to_vec(&key), serde_json::to_vec(&value)) {
            (Ok(key), Ok(value)) => {
                self.batch_bytes += key.len() + value.len();
                self.batch.push((key, value));
                if self.batch_bytes >= BATCH_BYTES {
                    self.flush();
                }
            }
            (Err(e), _) | (_, Err(e)) => self.error = Some(e.into()),
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            host::emit(&self.batch);
            self.batch.clear();
            self.batch_bytes = 0;
        }
    }

    /// Flush what is left, or report the first encoding error.
    pub(crate) fn finish(mut self) -> Result<(), Error> {
        match self.error.take() {
            Some(error) => Err(error),
            None => {
                self.flush();
                Ok(())
            }
        }
    }
}
