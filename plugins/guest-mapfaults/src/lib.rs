//! `guest-mapfaults`: an adversarial map/reduce guest that fails on demand, to test that a
//! failing task fails its job with a clear error and the node keeps serving.
//!
//! Each input line is a word. `map` emits `(word, 1)` for every line, except:
//! `trap` panics, `loop` spins until the deadline stops it, `hog` allocates until the memory
//! cap stops it, and `flood` emits without end until the emit cap stops it; a word starting
//! with `spin` spins for about half a second (2^29 steps) and is then counted like any word, so its
//! task is slow but finishes.
//! `reduce` sums (spinning again for a word starting with `spin`), and refuses the word `fail`
//! with an error of its own.

use weft_sdk::{Emitter, Error, MapReduce};

/// Fails on demand.
pub struct MapFaults;

impl MapReduce for MapFaults {
    type Key = String;
    type Value = u64;
    type Output = u64;

    fn map(chunk: &str, out: &mut Emitter<String, u64>) -> Result<(), Error> {
        for word in chunk.lines().map(str::trim).filter(|w| !w.is_empty()) {
            match word {
                "trap" => panic!("guest-mapfaults: deliberate panic in map"),
                "loop" => {
                    let mut state = 1u64;
                    loop {
                        state = std::hint::black_box(
                            state
                                .wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(1),
                        );
                    }
                }
                spin if spin.starts_with("spin") => out.emit(word.to_string(), 1 + spin_once()),
                "hog" => {
                    let mut blocks: Vec<Vec<u8>> = Vec::new();
                    loop {
                        let mut block = vec![0u8; 1 << 20];
                        for page in block.chunks_mut(4096) {
                            page[0] = 1;
                        }
                        blocks.push(std::hint::black_box(block));
                    }
                }
                "flood" => {
                    for i in 0u64.. {
                        out.emit(format!("flood-{i:0>64}"), i);
                    }
                }
                word => out.emit(word.to_string(), 1),
            }
        }
        Ok(())
    }

    fn reduce(word: String, counts: Vec<u64>, out: &mut Emitter<String, u64>) -> Result<(), Error> {
        let slow = if word.starts_with("spin") {
            spin_once()
        } else {
            0
        };
        if word == "fail" {
            return Err(Error::msg("guest-mapfaults: the reducer refuses `fail`"));
        }
        out.emit(word, counts.iter().sum::<u64>() + slow);
        Ok(())
    }
}

/// Spins for about half a second; always 0 (the result keeps the loop from being optimized away).
fn spin_once() -> u64 {
    let mut state = 1u64;
    for _ in 0..1u64 << 29 {
        state = std::hint::black_box(
            state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1),
        );
    }
    u64::from(state == 0)
}

weft_sdk::export_mapreduce!(MapFaults);

#[cfg(test)]
mod tests {
    use weft_sdk::testing::run_mapreduce;

    #[test]
    fn ordinary_words_are_counted() {
        let got = run_mapreduce::<super::MapFaults>("a\nb\na\n", 2);
        assert_eq!(got, vec![("a".to_string(), 2), ("b".to_string(), 1)]);
    }
}
