//! `invindex`: an inverted index, from every word to the documents it occurs in.
//!
//! Each input line is a document's id, a tab, and the document's text (a document may span
//! several lines, each starting with its id). Words are read as `wordcount` reads them:
//! maximal runs of alphanumeric characters, lowercased. Keys are the words (JSON strings),
//! values document ids, and each output is the sorted list of the documents a word occurs in.
//! A line without a tab fails the task, naming the line.

use weft_sdk::{Emitter, Error, MapReduce};

/// Indexes documents by the words in them.
pub struct InvertedIndex;

impl MapReduce for InvertedIndex {
    type Key = String;
    type Value = String;
    type Output = Vec<String>;

    const HAS_COMBINER: bool = true;

    fn map(chunk: &str, out: &mut Emitter<String, String>) -> Result<(), Error> {
        let mut words: Vec<String> = Vec::new();
        for line in chunk.lines().filter(|l| !l.trim().is_empty()) {
            let Some((doc, text)) = line.split_once('\t') else {
                return Err(Error::msg(format!(
                    "invindex: a line must be DOC<TAB>TEXT, and this one has no tab: {:?}",
                    line.chars().take(80).collect::<String>()
                )));
            };
            words.clear();
            words.extend(
                text.split(|c: char| !c.is_alphanumeric())
                    .filter(|w| !w.is_empty())
                    .map(str::to_lowercase),
            );
            words.sort_unstable();
            words.dedup();
            for w in &words {
                out.emit_ref(w.as_str(), doc.to_string());
            }
        }
        Ok(())
    }

    fn combine(
        word: String,
        mut docs: Vec<String>,
        out: &mut Emitter<String, String>,
    ) -> Result<(), Error> {
        docs.sort_unstable();
        docs.dedup();
        for doc in docs {
            out.emit(word.clone(), doc);
        }
        Ok(())
    }

    fn reduce(
        word: String,
        mut docs: Vec<String>,
        out: &mut Emitter<String, Vec<String>>,
    ) -> Result<(), Error> {
        docs.sort_unstable();
        docs.dedup();
        out.emit(word, docs);
        Ok(())
    }
}

weft_sdk::export_mapreduce!(InvertedIndex);

#[cfg(test)]
mod tests {
    use weft_sdk::testing::{run_mapreduce, try_run_mapreduce};

    #[test]
    fn indexes_words_by_document() {
        let out = run_mapreduce::<super::InvertedIndex>(
            "d1\tThe loom, the weft.\nd2\tA loom\nd1\tmore loom\n\n",
            2,
        );
        let get = |w: &str| {
            out.iter()
                .find(|(k, _)| k == w)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        assert_eq!(get("loom"), vec!["d1".to_string(), "d2".to_string()]);
        assert_eq!(get("the"), vec!["d1".to_string()]);
        assert_eq!(get("more"), vec!["d1".to_string()]);
        assert_eq!(out.len(), 5, "{out:?}");
    }

    #[test]
    fn a_line_without_a_tab_is_an_error_naming_it() {
        let e = try_run_mapreduce::<super::InvertedIndex>("d1 no tab here\n", 1).unwrap_err();
        assert!(e.contains("no tab: \"d1 no tab here\""), "{e}");
    }
}
