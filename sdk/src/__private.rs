//! Glue called by the SDK's macros from the guest crate; not a public API.
//!
//! The byte-level map/reduce steps live here (not behind `cfg(wasm32)`) so that
//! [`crate::testing`] drives exactly the code a component runs.

use serde::de::DeserializeOwned;

use crate::mapreduce::{Emitter, MapReduce};
use crate::records;

#[cfg(all(target_arch = "wasm32", feature = "http"))]
pub use wasi;

#[cfg(all(target_arch = "wasm32", feature = "http"))]
mod serve;
#[cfg(all(target_arch = "wasm32", feature = "http"))]
pub use serve::serve;

/// The `mapreduce` world; its export macro is used by `export_mapreduce!`.
#[cfg(all(target_arch = "wasm32", feature = "mapreduce"))]
#[allow(unsafe_code, missing_docs, clippy::all)]
pub mod task_bindings {
    wit_bindgen::generate!({
        world: "mapreduce",
        path: "wit",
        with: { "weft:plugin/log@0.3.0": crate::host::wasm::bindings::weft::plugin::log },
        pub_export_macro: true,
        export_macro_name: "export_task",
        default_bindings_module: "weft_sdk::__private::task_bindings",
    });
}

/// Compile-time check that `f` is a handler (used by `http_handler!` on native targets).
pub fn check_handler<R: crate::IntoResponse>(_handler: fn(crate::Request) -> R) {}

/// Compile-time check that `T` is a task (used by `export_mapreduce!` on native targets).
pub fn check_task<T: MapReduce>() {}

/// Whether the host should call `combine` on a chunk's map output: never, since `map`
/// combines its output itself (in guest memory) when the task has a combiner.
pub fn has_combiner<T: MapReduce>() -> bool {
    false
}

/// The `map` export: run `T::map_bytes` (by default `T::map` on the chunk as UTF-8), combining
/// its output when the task has a combiner, and flush its output.
pub fn map<T: MapReduce>(chunk: &[u8]) -> Result<(), String> {
    let mut out = if T::MERGES {
        Emitter::merging(T::merge)
    } else if T::HAS_COMBINER {
        Emitter::combining(T::combine)
    } else {
        Emitter::new()
    };
    T::map_bytes(chunk, &mut out)
        .and_then(|()| out.finish())
        .map_err(|e| e.to_string())
}

/// The `combine` export: `T::combine` on each group of `groups` (group records), all output
/// through one emitter.
pub fn combine<T: MapReduce>(groups: &[u8]) -> Result<(), String> {
    let mut out = Emitter::new();
    for_each_group::<T::Key, T::Value>(groups, |key, values| T::combine(key, values, &mut out))?;
    out.finish().map_err(|e| e.to_string())
}

/// The `reduce` export: `T::reduce` on each group of `groups` (group records), all output
/// through one emitter.
pub fn reduce<T: MapReduce>(groups: &[u8]) -> Result<(), String> {
    let mut out = Emitter::new();
    for_each_group::<T::Key, T::Value>(groups, |key, values| T::reduce(key, values, &mut out))?;
    out.finish().map_err(|e| e.to_string())
}

/// Decodes each group of `groups` and hands it to `step`; stops at the first error.
fn for_each_group<K: DeserializeOwned, V: DeserializeOwned>(
    groups: &[u8],
    mut step: impl FnMut(K, Vec<V>) -> Result<(), crate::Error>,
) -> Result<(), String> {
    let mut reader = records::Reader::new(groups);
    while !reader.is_empty() {
        let key = reader.field()?;
        let key = serde_json::from_slice(key).map_err(|e| {
            format!(
                "key {:?} is not this task's JSON key: {e}",
                String::from_utf8_lossy(key)
            )
        })?;
        let count = reader.u32()?;
        let mut values = Vec::with_capacity((count as usize).min(groups.len() / 4));
        for _ in 0..count {
            values.push(
                serde_json::from_slice(reader.field()?)
                    .map_err(|e| format!("a value is not this task's JSON value: {e}"))?,
            );
        }
        step(key, values).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use crate::{Emitter, Error, testing};

    /// Emits one ~1 KiB pair per line.
    struct Wide;

    impl MapReduce for Wide {
        type Key = u32;
        type Value = String;
        type Output = usize;

        fn map(chunk: &str, out: &mut Emitter<u32, String>) -> Result<(), Error> {
            for (i, _) in chunk.lines().enumerate() {
                out.emit(i as u32, "x".repeat(1024));
            }
            Ok(())
        }

        fn reduce(
            key: u32,
            values: Vec<String>,
            out: &mut Emitter<u32, usize>,
        ) -> Result<(), Error> {
            out.emit(key, values.len());
            Ok(())
        }
    }

    #[test]
    fn output_is_flushed_in_batches_of_about_64_kib() {
        let _host = testing::MockHost::new();
        map::<Wide>("\n".repeat(200).as_bytes()).unwrap();
        // 200 KiB of output: three full batches and the rest at the end of the call.
        assert_eq!(testing::emit_calls(), 4);
        let output = crate::host::mock::with(|state| std::mem::take(&mut state.emitted));
        assert_eq!(records::pairs(&output).unwrap().len(), 200);
    }

    /// Counts the lines of each length; combines by summing, and fails to combine the
    /// length 13 (to show a combiner's error ends the map step).
    struct Lengths;

    impl MapReduce for Lengths {
        type Key = usize;
        type Value = u64;
        type Output = u64;
        const HAS_COMBINER: bool = true;

        fn map(chunk: &str, out: &mut Emitter<usize, u64>) -> Result<(), Error> {
            chunk.lines().for_each(|l| out.emit(l.len(), 1));
            Ok(())
        }

        fn combine(
            key: usize,
            values: Vec<u64>,
            out: &mut Emitter<usize, u64>,
        ) -> Result<(), Error> {
            if key == 13 {
                return Err(Error::msg("13 is unlucky"));
            }
            out.emit(key, values.iter().sum());
            Ok(())
        }

        fn reduce(
            key: usize,
            values: Vec<u64>,
            out: &mut Emitter<usize, u64>,
        ) -> Result<(), Error> {
            out.emit(key, values.iter().sum());
            Ok(())
        }
    }

    fn emitted() -> Vec<(String, String)> {
        let mut pairs: Vec<(String, String)> = records::pairs(&crate::host::mock::with(|state| {
            std::mem::take(&mut state.emitted)
        }))
        .unwrap()
        .into_iter()
        .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
        .collect();
        pairs.sort();
        pairs
    }

    #[test]
    fn map_combines_its_output_in_the_guest_and_the_host_need_not() {
        let _host = testing::MockHost::new();
        assert!(!has_combiner::<Lengths>(), "the host would combine again");
        map::<Lengths>(b"a\nbb\ncc\nd\ndd\n").unwrap();
        // One pair per distinct key, in one call to the host.
        assert_eq!(
            emitted(),
            [("1".into(), "2".into()), ("2".into(), "3".into())]
        );
        assert_eq!(testing::emit_calls(), 1);
    }

    #[test]
    fn map_combines_in_parts_once_it_holds_about_8_mib() {
        let _host = testing::MockHost::new();
        // 1.5 M one-character lines: 8 bytes of value each, 12 MiB held in all.
        let input = "x\n".repeat(1_500_000);
        map::<Lengths>(input.as_bytes()).unwrap();
        let pairs = emitted();
        assert_eq!(pairs.len(), 2, "combined in two parts: {pairs:?}");
        let total: u64 = pairs.iter().map(|(_, v)| v.parse::<u64>().unwrap()).sum();
        assert_eq!(total, 1_500_000);
    }

    /// Counts the lines of each length by merging counts in place.
    struct MergedLengths;

    impl MapReduce for MergedLengths {
        type Key = usize;
        type Value = u64;
        type Output = u64;
        const MERGES: bool = true;

        fn map(chunk: &str, out: &mut Emitter<usize, u64>) -> Result<(), Error> {
            chunk.lines().for_each(|l| out.emit(l.len(), 1));
            Ok(())
        }

        fn merge(held: &mut u64, value: u64) {
            *held += value;
        }

        fn reduce(
            key: usize,
            values: Vec<u64>,
            out: &mut Emitter<usize, u64>,
        ) -> Result<(), Error> {
            out.emit(key, values.iter().sum());
            Ok(())
        }
    }

    #[test]
    fn a_merging_map_holds_one_value_per_key_and_emits_it_once() {
        let _host = testing::MockHost::new();
        map::<MergedLengths>(b"a\nbb\ncc\nd\ndd\n").unwrap();
        assert_eq!(
            emitted(),
            [("1".into(), "2".into()), ("2".into(), "3".into())]
        );
        assert_eq!(testing::emit_calls(), 1);
        // A second step starts afresh.
        map::<MergedLengths>(b"eee\n").unwrap();
        assert_eq!(emitted(), [("3".into(), "1".into())]);
    }

    #[test]
    fn a_failing_combiner_fails_the_map_step() {
        let _host = testing::MockHost::new();
        let err = map::<Lengths>(b"thirteen char\n").unwrap_err();
        assert_eq!(err, "13 is unlucky");
    }

    #[test]
    fn no_output_means_no_emit_call() {
        let _host = testing::MockHost::new();
        map::<Wide>(b"").unwrap();
        assert_eq!(testing::emit_calls(), 0);
    }

    #[test]
    fn map_rejects_input_that_is_not_utf8() {
        let err = map::<Wide>(b"ok\n\xff\xfe\n").unwrap_err();
        assert!(err.starts_with("map input is not UTF-8"), "{err}");
    }

    #[test]
    fn reduce_rejects_keys_and_values_of_another_type() {
        let mut groups = Vec::new();
        records::put_group(&mut groups, br#""text""#, &[]);
        let err = reduce::<Wide>(&groups).unwrap_err();
        assert!(
            err.starts_with(r#"key "\"text\"" is not this task's JSON key"#),
            "{err}"
        );
        let mut groups = Vec::new();
        records::put_group(&mut groups, b"1", &[b"2".to_vec()]);
        let err = combine::<Wide>(&groups).unwrap_err();
        assert!(
            err.starts_with("a value is not this task's JSON value"),
            "{err}"
        );
    }
}
