//! `{{name}}`: a map/reduce task. For every input line `KEY VALUE` (whitespace between them),
//! it sums the values of each key: `weft job run {{name}} --input sales.txt` answers
//! `{"apples":12,"pears":3}`-like records, one per key.
//!
//! `map` runs once per chunk of input lines, `merge` folds values of one key as `map` emits
//! them (a combiner), and `reduce` gets every value of one key.

use weft_sdk::{Emitter, Error, MapReduce};

/// Sums the values of each key.
pub struct Task;

impl MapReduce for Task {
    type Key = String;
    type Value = i64;
    type Output = i64;

    // Values are summed as they are emitted, so a map step holds one value per key.
    const MERGES: bool = true;

    fn map(chunk: &str, out: &mut Emitter<String, i64>) -> Result<(), Error> {
        for line in chunk.lines().filter(|l| !l.trim().is_empty()) {
            let mut words = line.split_whitespace();
            let (Some(key), Some(value), None) = (words.next(), words.next(), words.next()) else {
                return Err(Error::Format(format!("expected `KEY VALUE`, found {line:?}")));
            };
            let value: i64 = value
                .parse()
                .map_err(|_| Error::Format(format!("`{value}` is not a whole number")))?;
            out.emit_ref(key, value);
        }
        Ok(())
    }

    fn merge(sum: &mut i64, more: i64) {
        *sum += more;
    }

    fn reduce(key: String, values: Vec<i64>, out: &mut Emitter<String, i64>) -> Result<(), Error> {
        out.emit(key, values.iter().sum());
        Ok(())
    }
}

weft_sdk::export_mapreduce!(Task);

#[cfg(test)]
mod tests {
    use weft_sdk::testing::{run_mapreduce, try_run_mapreduce};

    #[test]
    fn sums_the_values_of_each_key() {
        let got = run_mapreduce::<super::Task>("apples 5\npears 3\n\napples 7\n", 2);
        assert_eq!(got, [("apples".to_owned(), 12), ("pears".to_owned(), 3)]);
    }

    #[test]
    fn a_bad_line_fails_the_task_with_its_text() {
        let err = try_run_mapreduce::<super::Task>("apples five\n", 1).unwrap_err();
        assert!(err.contains("`five` is not a whole number"), "{err}");
    }
}
