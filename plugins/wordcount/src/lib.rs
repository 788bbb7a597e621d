//! `wordcount`: the classic map/reduce example, with a combiner that merges counts as map
//! emits them (`MapReduce::MERGES`).
//!
//! Words are maximal runs of alphanumeric characters, lowercased. Keys are the words (JSON
//! strings), values and outputs are counts (JSON numbers).

use weft_sdk::{Emitter, Error, MapReduce};

/// Counts how often each word occurs.
pub struct WordCount;

impl MapReduce for WordCount {
    type Key = String;
    type Value = u64;
    type Output = u64;

    // Counts are summed as they are emitted: a map step holds one count per word.
    const MERGES: bool = true;

    fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
        let mut lower = String::new();
        for w in chunk
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            word(w, &mut lower, out);
        }
        Ok(())
    }

    fn merge(count: &mut u64, more: u64) {
        *count += more;
    }

    fn reduce(word: String, counts: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
        out.emit(word, counts.iter().sum());
        Ok(())
    }
}

/// Counts one word. A word already in lowercase ASCII (most words) is emitted as it is;
/// another is lowercased into one reused buffer. The emitter copies a key only when it is
/// new among the pairs it holds.
fn word(word: &str, lower: &mut String, out: &mut Emitter<String, u64>) {
    if word
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        out.emit_ref(word, 1);
        return;
    }
    lower.clear();
    if word.is_ascii() {
        lower.push_str(word);
        lower.make_ascii_lowercase();
    } else {
        // `str::to_lowercase` knows context (a final sigma), `char`'s does not.
        lower.push_str(&word.to_lowercase());
    }
    out.emit_ref(lower.as_str(), 1);
}

weft_sdk::export_mapreduce!(WordCount);

#[cfg(test)]
mod tests {
    use weft_sdk::testing::run_mapreduce;

    fn check(input: &str, expected: &[(&str, u64)]) {
        let got = run_mapreduce::<super::WordCount>(input, 3);
        let expected: Vec<(String, u64)> = expected
            .iter()
            .map(|(w, n)| ((*w).to_owned(), *n))
            .collect();
        assert_eq!(got, expected, "input {input:?}");
    }

    #[test]
    fn counts_words() {
        check("", &[]);
        check("the cat\nThe dog\n", &[("cat", 1), ("dog", 1), ("the", 2)]);
        check("a-b, a_b! A1\n", &[("a", 2), ("a1", 1), ("b", 2)]);
        check("Ünïcode ÜNÏCODE\n", &[("ünïcode", 2)]);
        // Non-ASCII separators inside a piece, and a final sigma.
        check(
            "naïve—café «Δ» ΣΟΦΟΣ x\u{a0}y\n",
            &[
                ("café", 1),
                ("naïve", 1),
                ("x", 1),
                ("y", 1),
                ("δ", 1),
                ("σοφος", 1),
            ],
        );
    }

    #[test]
    fn many_chunks_agree_with_a_direct_count() {
        let input = "to be or not to be\n".repeat(500);
        check(
            &input,
            &[("be", 1000), ("not", 500), ("or", 500), ("to", 1000)],
        );
    }
}
