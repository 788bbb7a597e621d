//! A job's summary: its output records counted, and the best of them kept in order.

use super::OutputRecord;

/// The order of a job's summary: larger numeric values first, then records without a numeric
/// value; ties by key.
pub fn record_order(a: &OutputRecord, b: &OutputRecord) -> std::cmp::Ordering {
    match (a.value.as_f64(), b.value.as_f64()) {
        (Some(x), Some(y)) => y
            .total_cmp(&x)
            .then_with(|| a.key.to_string().cmp(&b.key.to_string())),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.key.to_string().cmp(&b.key.to_string()),
    }
}

/// The running summary of a job's output: how many records, and the `n` first in
/// [`record_order`] (the node's summary keeps `TOP`, 10; `weft job result --top N` any number).
pub struct Top {
    n: usize,
    count: u64,
    best: Vec<OutputRecord>,
}

impl Top {
    /// A summary keeping the `n` best records.
    pub fn new(n: usize) -> Self {
        Top {
            n,
            count: 0,
            best: Vec::new(),
        }
    }

    /// Counts `records` and keeps the best of them.
    pub fn add(&mut self, records: Vec<OutputRecord>) {
        self.count += records.len() as u64;
        self.best.extend(records);
        // Keep the n best without sorting a whole partition's output.
        if self.best.len() > self.n {
            if self.n == 0 {
                self.best.clear();
            } else {
                self.best.select_nth_unstable_by(self.n - 1, record_order);
                self.best.truncate(self.n);
            }
        }
        self.best.sort_by(record_order);
    }

    /// The best records, in order.
    pub fn best(&self) -> Vec<OutputRecord> {
        self.best.clone()
    }
}
