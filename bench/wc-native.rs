//! The COST baseline for the word-count comparison: a naive, single-threaded native count
//! with the same definition of a word as the `wordcount` plugin (maximal runs of alphanumeric
//! characters, lowercased). Built by `bench/compare-wordcount.sh` with `rustc -O`.
//!
//!   wc-native FILE   prints `words=N distinct=D seconds=S`

use std::collections::HashMap;

fn main() {
    let path = std::env::args().nth(1).expect("usage: wc-native FILE");
    let started = std::time::Instant::now();
    let text = std::fs::read_to_string(&path).expect("a readable UTF-8 file");
    let mut counts: HashMap<String, u64> = HashMap::new();
    let mut words = 0u64;
    for word in text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()) {
        *counts.entry(word.to_lowercase()).or_default() += 1;
        words += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!("words={words} distinct={} seconds={seconds:.3}", counts.len());
}
