//! `guest-rawtask`: a map/reduce task written against `sdk/wit` with wit-bindgen alone, no
//! SDK, as a guest in another language would be. It asks the host to call `combine`
//! (`has-combiner` true), and reads and writes the pair and group records itself.
//!
//! Each input line is a word (raw bytes, not JSON). `map` emits `(word, "1")` per line, and a
//! truncated record for the word `malformed`; `combine` sums a key's values; `reduce` emits
//! `[sum, values]`, the sum and how many values reached it (one per map task that saw the
//! word, when the host combined), fails if its keys do not arrive in ascending order, and
//! emits a truncated record for the word `badreduce`.
//! Only a wasm32 build has any code.
#![cfg(target_arch = "wasm32")]
// wit-bindgen's generated glue (the exports' C ABI) is unsafe code.
#![allow(unsafe_code)]

wit_bindgen::generate!({
    world: "mapreduce",
    path: "../../sdk/wit",
});

use exports::weft::plugin::task::{Guest, TaskInfo};

struct Raw;

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A key and its values.
type Group<'a> = (&'a [u8], Vec<&'a [u8]>);

/// Reads group records: each key with its values.
fn groups(mut bytes: &[u8]) -> Result<Vec<Group<'_>>, String> {
    fn u32_at(bytes: &mut &[u8]) -> Result<u32, String> {
        let (head, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("truncated group records")?;
        *bytes = rest;
        Ok(u32::from_le_bytes(*head))
    }
    fn field<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], String> {
        let len = u32_at(bytes)? as usize;
        if len > bytes.len() {
            return Err("truncated group records".into());
        }
        let (field, rest) = bytes.split_at(len);
        *bytes = rest;
        Ok(field)
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = field(&mut bytes)?;
        let count = u32_at(&mut bytes)?;
        let values = (0..count)
            .map(|_| field(&mut bytes))
            .collect::<Result<_, _>>()?;
        out.push((key, values));
    }
    Ok(out)
}

fn sum(values: &[&[u8]]) -> Result<u64, String> {
    values
        .iter()
        .map(|v| {
            std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("not a count: {v:?}"))
        })
        .sum()
}

impl Guest for Raw {
    fn info() -> TaskInfo {
        TaskInfo { has_combiner: true }
    }

    fn map(chunk: Vec<u8>) -> Result<(), String> {
        let mut out = Vec::new();
        for word in chunk.split(|b| *b == b'\n').filter(|w| !w.is_empty()) {
            if word == b"malformed" {
                // A key said to be 200 bytes long, with one byte.
                out.extend_from_slice(&[200, 0, 0, 0, b'x']);
                continue;
            }
            put(&mut out, word);
            put(&mut out, b"1");
        }
        weft::plugin::emit::emit(&out);
        Ok(())
    }

    fn combine(input: Vec<u8>) -> Result<(), String> {
        let mut out = Vec::new();
        for (key, values) in groups(&input)? {
            put(&mut out, key);
            put(&mut out, sum(&values)?.to_string().as_bytes());
        }
        weft::plugin::emit::emit(&out);
        Ok(())
    }

    fn reduce(input: Vec<u8>) -> Result<(), String> {
        let mut out = Vec::new();
        let mut last: Option<&[u8]> = None;
        let groups = groups(&input)?;
        for (key, values) in &groups {
            if last.is_some_and(|last| last >= *key) {
                return Err(format!("keys out of order: {last:?} before {key:?}"));
            }
            last = Some(key);
            if *key == b"badreduce" {
                out.extend_from_slice(&[1, 0]);
                continue;
            }
            put(&mut out, key);
            put(
                &mut out,
                format!("[{},{}]", sum(values)?, values.len()).as_bytes(),
            );
        }
        weft::plugin::emit::emit(&out);
        Ok(())
    }
}

export!(Raw);
