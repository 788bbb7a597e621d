//! Map/reduce tasks run in memory, with and without a combiner, and their failures.

use std::collections::BTreeMap;

use weft_sdk::testing::{run_mapreduce, try_run_mapreduce};
use weft_sdk::{Emitter, Error, MapReduce};

/// Counts letters; its combiner tags the partial sums so the test can see it ran.
struct Letters<const COMBINE: bool>;

impl<const COMBINE: bool> MapReduce for Letters<COMBINE> {
    type Key = char;
    type Value = (u64, bool);
    type Output = (u64, bool);

    const HAS_COMBINER: bool = COMBINE;

    fn map(chunk: &str, out: &mut Emitter<char, (u64, bool)>) -> Result<(), Error> {
        chunk
            .chars()
            .filter(char::is_ascii_alphabetic)
            .for_each(|c| out.emit(c, (1, false)));
        Ok(())
    }

    fn combine(
        key: char,
        values: Vec<(u64, bool)>,
        out: &mut Emitter<char, (u64, bool)>,
    ) -> Result<(), Error> {
        out.emit(key, (values.iter().map(|(n, _)| n).sum(), true));
        Ok(())
    }

    fn reduce(
        key: char,
        values: Vec<(u64, bool)>,
        out: &mut Emitter<char, (u64, bool)>,
    ) -> Result<(), Error> {
        let combined = values.iter().all(|(_, combined)| *combined);
        out.emit(key, (values.iter().map(|(n, _)| n).sum(), combined));
        Ok(())
    }
}
weft_sdk::export_mapreduce!(Letters<true>);

#[test]
fn without_combiner_reduce_sees_raw_map_output() {
    let got = run_mapreduce::<Letters<false>>("ab\nba\nb\n", 2);
    assert_eq!(got, [('a', (2, false)), ('b', (3, false))]);
}

#[test]
fn with_combiner_reduce_sees_combined_output() {
    let got = run_mapreduce::<Letters<true>>("ab\nba\nb\n", 2);
    assert_eq!(got, [('a', (2, true)), ('b', (3, true))]);
}

#[test]
fn result_does_not_depend_on_reducer_count_or_chunking() {
    let input = "the quick brown fox\n".repeat(100);
    let one = run_mapreduce::<Letters<true>>(&input, 1);
    assert_eq!(one, run_mapreduce::<Letters<true>>(&input, 7));
    assert_eq!(
        one,
        run_mapreduce::<Letters<false>>(&input, 0)
            .into_iter()
            .map(|(k, (n, _))| (k, (n, true)))
            .collect::<Vec<_>>()
    );
    assert_eq!(one.iter().find(|(k, _)| *k == 'o').unwrap().1.0, 200);
}

/// Fails in reduce for key "bad".
struct FailsOnBad;

impl MapReduce for FailsOnBad {
    type Key = String;
    type Value = u8;
    type Output = u8;

    fn map(chunk: &str, out: &mut Emitter<String, u8>) -> Result<(), Error> {
        chunk.lines().for_each(|line| out.emit(line.to_owned(), 1));
        Ok(())
    }

    fn reduce(key: String, _: Vec<u8>, out: &mut Emitter<String, u8>) -> Result<(), Error> {
        if key == "bad" {
            return Err(Error::msg("cannot reduce `bad`"));
        }
        out.emit(key, 1);
        Ok(())
    }
}

#[test]
fn a_failing_step_reports_its_message() {
    assert_eq!(
        try_run_mapreduce::<FailsOnBad>("ok\n", 1),
        Ok(vec![("ok".to_owned(), 1)])
    );
    assert_eq!(
        try_run_mapreduce::<FailsOnBad>("ok\nbad\n", 1),
        Err("reduce: cannot reduce `bad`".to_owned())
    );
}

/// Emits a value JSON cannot encode (a map with non-string keys).
struct Unencodable;

impl MapReduce for Unencodable {
    type Key = u8;
    type Value = BTreeMap<(u8, u8), u8>;
    type Output = u8;

    fn map(_: &str, out: &mut Emitter<u8, BTreeMap<(u8, u8), u8>>) -> Result<(), Error> {
        out.emit(0, BTreeMap::from([((1, 2), 3)]));
        Ok(())
    }

    fn reduce(_: u8, _: Vec<BTreeMap<(u8, u8), u8>>, _: &mut Emitter<u8, u8>) -> Result<(), Error> {
        Ok(())
    }
}

#[test]
fn encoding_errors_fail_the_step() {
    let err = try_run_mapreduce::<Unencodable>("x\n", 1).unwrap_err();
    assert!(
        err.starts_with("map: JSON encoding or decoding failed"),
        "{err}"
    );
}
