//! `guest-records`: a map/reduce guest for jobs whose input is length-prefixed records
//! (`weft job run --records length-prefixed`): it counts each distinct record, read as text,
//! so a record that holds newlines is still one record.

use weft_sdk::{Emitter, Error, MapReduce};

/// Counts records.
pub struct Records;

impl MapReduce for Records {
    type Key = String;
    type Value = u64;
    type Output = u64;

    const MERGES: bool = true;

    fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
        Self::map_bytes(chunk.as_bytes(), out)
    }

    fn map_bytes(chunk: &[u8], out: &mut Emitter<String, u64>) -> Result<(), Error> {
        for record in weft_sdk::mapreduce::length_prefixed(chunk) {
            out.emit(String::from_utf8_lossy(record?).into_owned(), 1);
        }
        Ok(())
    }

    fn merge(held: &mut u64, value: u64) {
        *held += value;
    }

    fn reduce(
        record: String,
        counts: Vec<u64>,
        out: &mut Emitter<String, u64>,
    ) -> Result<(), Error> {
        out.emit(record, counts.iter().sum());
        Ok(())
    }
}

weft_sdk::export_mapreduce!(Records);

#[cfg(test)]
mod tests {
    use weft_sdk::testing::try_run_records;

    #[test]
    fn records_with_newlines_are_counted_whole() {
        let got = try_run_records::<super::Records>(&[b"a\nb", b"c", b"a\nb", b""], 2);
        assert_eq!(
            got,
            Ok(vec![
                (String::new(), 1),
                ("a\nb".to_string(), 2),
                ("c".to_string(), 1)
            ])
        );
    }
}
