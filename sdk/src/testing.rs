//! Unit-test guests natively: an in-memory host for handlers and an in-memory map/reduce runner.
//!
//! On native targets every SDK host call (kv, log, emit) goes to a per-thread mock, so each
//! `#[test]` (its own thread) starts from its own state; [`MockHost::new`] resets it explicitly.
//!
//! ```
//! use weft_sdk::{Request, Response, kv, testing::MockHost};
//!
//! fn visits(_req: Request) -> Result<Response, weft_sdk::Error> {
//!     Ok(Response::text(200, kv::increment("visits", 1)?.to_string()))
//! }
//!
//! let host = MockHost::new();
//! host.call(visits, Request::get("/"));
//! assert_eq!(host.call(visits, Request::get("/")).body_str(), Ok("2"));
//! assert_eq!(host.kv_raw("visits"), Some(2i64.to_le_bytes().to_vec()));
//! ```

use std::collections::BTreeMap;

use crate::host::mock;
use crate::log::Level;
use crate::{__private, IntoResponse, MapReduce, Request, Response, records};

/// A handle on this thread's mock host: its key-value store and the lines logged so far.
///
/// ```
/// let host = weft_sdk::testing::MockHost::new();
/// weft_sdk::log::info("hi");
/// assert_eq!(host.logs(), [(weft_sdk::log::Level::Info, "hi".to_owned())]);
/// ```
#[derive(Debug)]
pub struct MockHost {
    /// Thread-bound like the state it inspects.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Default for MockHost {
    fn default() -> Self {
        MockHost::new()
    }
}

impl MockHost {
    /// Reset this thread's mock host (empty store, no logs, kv working) and return a handle.
    ///
    /// ```
    /// weft_sdk::kv::set("k", &1).unwrap();
    /// let host = weft_sdk::testing::MockHost::new();
    /// assert_eq!(host.kv_raw("k"), None);
    /// ```
    pub fn new() -> Self {
        mock::with(|state| *state = mock::State::default());
        MockHost {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Run `handler` on `request` as the host would and return its response.
    ///
    /// Unlike a component, a panicking handler panics the test instead of answering 500.
    ///
    /// ```
    /// use weft_sdk::{Request, Response};
    /// let host = weft_sdk::testing::MockHost::new();
    /// let resp = host.call(|req: Request| Response::text(200, req.method), Request::get("/"));
    /// assert_eq!(resp.body_str(), Ok("GET"));
    /// ```
    pub fn call<R: IntoResponse>(
        &self,
        handler: impl FnOnce(Request) -> R,
        request: Request,
    ) -> Response {
        handler(request).into_response()
    }

    /// The lines logged on this thread since the last reset, oldest first.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// weft_sdk::log::warn("careful");
    /// assert_eq!(host.logs()[0].1, "careful");
    /// ```
    pub fn logs(&self) -> Vec<(Level, String)> {
        mock::with(|state| state.logs.clone())
    }

    /// The raw bytes stored under `key`.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// weft_sdk::kv::set("name", "ada").unwrap();
    /// assert_eq!(host.kv_raw("name"), Some(br#""ada""#.to_vec()));
    /// ```
    pub fn kv_raw(&self, key: &str) -> Option<Vec<u8>> {
        mock::with(|state| {
            state.expire();
            state.kv.get(key.as_bytes()).cloned()
        })
    }

    /// A copy of the whole store, keys and values as raw bytes.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// weft_sdk::kv::set_raw("a", b"1").unwrap();
    /// assert_eq!(host.kv_entries().len(), 1);
    /// ```
    pub fn kv_entries(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        mock::with(|state| {
            state.expire();
            state.kv.clone()
        })
    }

    /// Move the mock clock forward: keys written with [`kv::set_with_ttl`](crate::kv::set_with_ttl)
    /// whose time ran out read as absent from then on. The clock moves only by this call.
    ///
    /// ```
    /// use std::time::Duration;
    /// let host = weft_sdk::testing::MockHost::new();
    /// weft_sdk::kv::set_raw_with_ttl("k", b"v", Duration::from_millis(100)).unwrap();
    /// host.advance(Duration::from_millis(99));
    /// assert_eq!(host.kv_raw("k"), Some(b"v".to_vec()));
    /// host.advance(Duration::from_millis(1));
    /// assert_eq!(host.kv_raw("k"), None);
    /// ```
    pub fn advance(&self, by: std::time::Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        mock::with(|state| state.clock_ms = state.clock_ms.saturating_add(ms));
    }

    /// Make every kv call fail with [`Error::Unavailable`](crate::Error::Unavailable) carrying
    /// `reason` (or work again with `None`), to test a handler's error path.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// host.fail_kv(Some("disk full"));
    /// assert!(weft_sdk::kv::get_raw("k").is_err());
    /// host.fail_kv(None);
    /// assert!(weft_sdk::kv::get_raw("k").is_ok());
    /// ```
    pub fn fail_kv(&self, reason: Option<&str>) {
        mock::with(|state| state.kv_failure = reason.map(str::to_owned));
    }

    /// The locks held now, with their tokens, by key.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// let _guard = weft_sdk::locks::lock("a", std::time::Duration::from_secs(1)).unwrap();
    /// assert_eq!(host.held_locks(), [("a".to_owned(), 1)]);
    /// ```
    pub fn held_locks(&self) -> Vec<(String, u64)> {
        mock::with(|state| {
            state
                .locks
                .iter()
                .map(|(k, (t, _))| (k.clone(), *t))
                .collect()
        })
    }

    /// Makes the held lock `key` lost, as when its lease runs out while the node is paused:
    /// from now on every key-value write fails with [`Error::Fenced`](crate::Error::Fenced),
    /// until the guard is dropped.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// let guard = weft_sdk::locks::lock("a", std::time::Duration::from_secs(1)).unwrap();
    /// host.lose_lock("a");
    /// assert!(matches!(weft_sdk::kv::set("k", &1), Err(weft_sdk::Error::Fenced(_))));
    /// drop(guard);
    /// assert!(weft_sdk::kv::set("k", &1).is_ok());
    /// ```
    pub fn lose_lock(&self, key: &str) {
        mock::with(|state| {
            if let Some((_, lost)) = state.locks.get_mut(key) {
                *lost = true;
            }
        });
    }

    /// Runs the next calls as a lock-protected handler holding `key`'s lock (under a new
    /// token), as the platform does for a function deployed with `--lock`; `None` ends it.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// host.set_handler_lock(Some("k"));
    /// assert_eq!(weft_sdk::locks::handler_lock().unwrap().0, "k");
    /// host.lose_lock("k");
    /// assert!(weft_sdk::kv::set("x", &1).is_err(), "writes under a lost lock are refused");
    /// ```
    pub fn set_handler_lock(&self, key: Option<&str>) {
        mock::with(|state| {
            if let Some((old, _)) = state.handler_lock.take() {
                state.locks.remove(&old);
            }
            if let Some(key) = key {
                state.last_token += 1;
                state
                    .locks
                    .insert(key.to_owned(), (state.last_token, false));
                state.handler_lock = Some((key.to_owned(), state.last_token));
            }
        });
    }

    /// Has another holder keep `key` (or let go of it, with `false`): taking it then fails
    /// with [`Error::LockTimeout`](crate::Error::LockTimeout).
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// host.lock_elsewhere("a", true);
    /// assert!(weft_sdk::locks::lock("a", std::time::Duration::ZERO).is_err());
    /// host.lock_elsewhere("a", false);
    /// assert!(weft_sdk::locks::lock("a", std::time::Duration::ZERO).is_ok());
    /// ```
    pub fn lock_elsewhere(&self, key: &str, held: bool) {
        mock::with(|state| {
            if held {
                state.held_elsewhere.insert(key.to_owned());
            } else {
                state.held_elsewhere.remove(key);
            }
        });
    }
}

/// What a map/reduce run produces: `(key, output)` pairs sorted by key.
///
/// ```
/// # use weft_sdk::{Emitter, Error, MapReduce};
/// # struct Words;
/// # impl MapReduce for Words {
/// #     type Key = String; type Value = u64; type Output = u64;
/// #     fn map(c: &str, o: &mut Emitter<String, u64>) -> Result<(), Error> { o.emit(c.trim().into(), 1); Ok(()) }
/// #     fn reduce(k: String, v: Vec<u64>, o: &mut Emitter<String, u64>) -> Result<(), Error> { o.emit(k, v.len() as u64); Ok(()) }
/// # }
/// let outputs: weft_sdk::testing::Outputs<Words> = weft_sdk::testing::run_mapreduce::<Words>("hi\n", 1);
/// assert_eq!(outputs, [("hi".to_owned(), 1)]);
/// ```
pub type Outputs<T> = Vec<(<T as MapReduce>::Key, <T as MapReduce>::Output)>;

/// At most this many bytes of whole lines go into one map chunk in [`run_mapreduce`], so that
/// small test inputs still exercise several chunks and the combiner.
pub const TEST_CHUNK_BYTES: usize = 256;

/// Run task `T` on `input` in memory the way a cluster does, and return the outputs sorted by key.
///
/// Input is cut into chunks of whole lines of at most [`TEST_CHUNK_BYTES`]; each is mapped,
/// combining its output inside `map` if `T::HAS_COMBINER`; pairs are shuffled by key into `reducers`
/// partitions and reduced. Everything goes through the same JSON encoding as a component.
/// Panics with the task's message if a step fails; see [`try_run_mapreduce`].
///
/// ```
/// # use weft_sdk::{Emitter, Error, MapReduce};
/// struct Lengths;
/// impl MapReduce for Lengths {
///     type Key = usize;
///     type Value = String;
///     type Output = usize;
///     fn map(chunk: &str, out: &mut Emitter<usize, String>) -> Result<(), Error> {
///         chunk.lines().for_each(|w| out.emit(w.len(), w.to_owned()));
///         Ok(())
///     }
///     fn reduce(len: usize, words: Vec<String>, out: &mut Emitter<usize, usize>) -> Result<(), Error> {
///         out.emit(len, words.len());
///         Ok(())
///     }
/// }
/// let got = weft_sdk::testing::run_mapreduce::<Lengths>("a\nbb\ncc\n", 3);
/// assert_eq!(got, [(1, 1), (2, 2)]);
/// ```
pub fn run_mapreduce<T: MapReduce>(input: &str, reducers: usize) -> Outputs<T>
where
    T::Key: Ord,
{
    try_run_mapreduce::<T>(input, reducers).unwrap_or_else(|e| panic!("map/reduce failed: {e}"))
}

/// Like [`run_mapreduce`] but returns the first failing step's message instead of panicking.
///
/// ```
/// # use weft_sdk::{Emitter, Error, MapReduce};
/// struct Picky;
/// impl MapReduce for Picky {
///     type Key = String;
///     type Value = u8;
///     type Output = u8;
///     fn map(chunk: &str, _: &mut Emitter<String, u8>) -> Result<(), Error> {
///         Err(Error::msg(format!("cannot parse {:?}", chunk.trim())))
///     }
///     fn reduce(_: String, _: Vec<u8>, _: &mut Emitter<String, u8>) -> Result<(), Error> {
///         Ok(())
///     }
/// }
/// let err = weft_sdk::testing::try_run_mapreduce::<Picky>("x\n", 1).unwrap_err();
/// assert_eq!(err, r#"map: cannot parse "x""#);
/// ```
pub fn try_run_mapreduce<T: MapReduce>(input: &str, reducers: usize) -> Result<Outputs<T>, String>
where
    T::Key: Ord,
{
    let chunks = chunks(input, TEST_CHUNK_BYTES);
    run_chunks::<T>(chunks.iter().map(|c| c.as_bytes()), reducers)
}

/// Runs a map/reduce task over `records` as a job with `--records length-prefixed` would:
/// the records encoded (each a 4-byte little-endian length, then its bytes) and cut into
/// chunks of whole records, handed to [`MapReduce::map_bytes`]; returns the output sorted by
/// key, or the first failing step's message.
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
/// let got = weft_sdk::testing::try_run_records::<Sizes>(&[b"a\nb", b"", b"xyz"], 2);
/// assert_eq!(got, Ok(vec![(0, 1), (3, 2)]));
/// ```
pub fn try_run_records<T: MapReduce>(
    records: &[&[u8]],
    reducers: usize,
) -> Result<Outputs<T>, String>
where
    T::Key: Ord,
{
    let mut chunks: Vec<Vec<u8>> = vec![Vec::new()];
    for r in records {
        let last = chunks.last_mut().expect("one chunk at least");
        if !last.is_empty() && last.len() + 4 + r.len() > TEST_CHUNK_BYTES {
            chunks.push(Vec::new());
        }
        let last = chunks.last_mut().expect("one chunk at least");
        let len = u32::try_from(r.len()).expect("a record fits in 4 GiB");
        last.extend_from_slice(&len.to_le_bytes());
        last.extend_from_slice(r);
    }
    chunks.retain(|c| !c.is_empty());
    run_chunks::<T>(chunks.iter().map(Vec::as_slice), reducers)
}

fn run_chunks<'a, T: MapReduce>(
    chunks: impl Iterator<Item = &'a [u8]>,
    reducers: usize,
) -> Result<Outputs<T>, String>
where
    T::Key: Ord,
{
    let _ = take_emitted();
    let mut map_output = Vec::new();
    for chunk in chunks {
        __private::map::<T>(chunk).map_err(|e| format!("map: {e}"))?;
        let mapped = take_emitted()?;
        // As the host does: combine only if the task asks it to (an SDK task combines
        // inside `map` and does not).
        if __private::has_combiner::<T>() {
            __private::combine::<T>(&encode_groups(group(mapped)))
                .map_err(|e| format!("combine: {e}"))?;
            map_output.extend(take_emitted()?);
        } else {
            map_output.extend(mapped);
        }
    }
    let reducers = reducers.max(1);
    let mut partitions = vec![Vec::new(); reducers];
    for (key, value) in map_output {
        partitions[partition(&key, reducers)].push((key, value));
    }
    let mut outputs = Vec::new();
    for partition in partitions {
        // Each partition's keys in one call, as a host would send a small partition.
        __private::reduce::<T>(&encode_groups(group(partition)))
            .map_err(|e| format!("reduce: {e}"))?;
        for (key, value) in take_emitted()? {
            let key: T::Key = serde_json::from_slice(&key)
                .map_err(|e| format!("reduce emitted a bad key: {e}"))?;
            let value: T::Output = serde_json::from_slice(&value)
                .map_err(|e| format!("reduce emitted a bad output: {e}"))?;
            outputs.push((key, value));
        }
    }
    outputs.sort_by(|(a, _), (b, _)| a.cmp(b));
    Ok(outputs)
}

/// Groups as the host hands them to `combine` and `reduce`.
fn encode_groups(groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for (key, values) in groups {
        records::put_group(&mut bytes, &key, &values);
    }
    bytes
}

/// Pairs emitted since the last call (and forget how many `emit` calls carried them).
fn take_emitted() -> Result<records::Pairs, String> {
    let bytes = mock::with(|state| {
        state.emit_calls = 0;
        std::mem::take(&mut state.emitted)
    });
    records::pairs(&bytes)
}

/// How many `emit` host calls the current thread made since the last drain (for batching tests).
#[cfg(test)]
pub(crate) fn emit_calls() -> usize {
    mock::with(|state| state.emit_calls)
}

/// Cut `input` into chunks of whole lines of at most `max` bytes (a longer line is its own chunk).
fn chunks(input: &str, max: usize) -> Vec<&str> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut end = 0;
    for line in input.split_inclusive('\n') {
        if end > start && end - start + line.len() > max {
            chunks.push(&input[start..end]);
            start = end;
        }
        end += line.len();
    }
    if end > start {
        chunks.push(&input[start..end]);
    }
    chunks
}

/// Group pairs by encoded key, keys in byte order, values in arrival order.
fn group(pairs: Vec<(Vec<u8>, Vec<u8>)>) -> BTreeMap<Vec<u8>, Vec<Vec<u8>>> {
    let mut groups: BTreeMap<Vec<u8>, Vec<Vec<u8>>> = BTreeMap::new();
    for (key, value) in pairs {
        groups.entry(key).or_default().push(value);
    }
    groups
}

/// A stable partition for an encoded key (FNV-1a), so runs are reproducible.
fn partition(key: &[u8], partitions: usize) -> usize {
    let hash = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % partitions as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::chunks;

    #[test]
    fn chunks_hold_whole_lines() {
        assert_eq!(chunks("a\nbb\nccc\n", 5), ["a\nbb\n", "ccc\n"]);
        assert_eq!(chunks("toolong\nx", 3), ["toolong\n", "x"]);
        assert_eq!(chunks("", 3), Vec::<&str>::new());
    }
}
