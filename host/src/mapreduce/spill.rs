//! Map output spilled to the node's disk: once the map output a node's jobs hold in memory
//! would pass its budget (`JobsConfig::shuffle_memory_bytes`), a map task's runs are written
//! to one file under `<data_dir>/spill/<job>/` and its reducers read them back through a
//! buffer of at most 64 KiB each. Files are not synced: a job does not outlive its node's
//! process, and the whole directory is removed at start. A reducer opens every spilled run
//! of its partition at once (a file and a buffer each), or, beyond [`MERGE_FAN_IN`] of them,
//! first merges them in passes of that many into new files ([`merge_to_file`]).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::records::{Cursor, Run};
use crate::id::JobId;

/// The read buffer of each spilled run a reducer merges: a reducer over N spilled runs holds
/// N times this.
pub const READ_BUFFER: usize = 64 << 10;

/// The most runs in files a reducer reads at once: beyond it, consecutive runs are merged
/// into new files, this many at a time, until no more are left (so a reducer holds at most
/// this many files open and read buffers, 4 MiB, whatever the number of map tasks).
pub const MERGE_FAN_IN: usize = 64;

/// Where a node's jobs spill.
#[derive(Clone, Debug)]
pub struct SpillDir {
    root: PathBuf,
}

impl SpillDir {
    /// Spills under `root`, removing what an earlier process left there.
    pub fn new(root: PathBuf) -> std::io::Result<Self> {
        match std::fs::remove_dir_all(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&root)?;
        Ok(SpillDir { root })
    }

    /// Where every job's directory is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Job `id`'s directory (created when its first run is spilled).
    pub fn job(&self, id: JobId) -> PathBuf {
        self.root.join(id.to_string())
    }
}

/// A sorted run written to disk: a range of one file.
#[derive(Clone, Debug)]
pub struct SpilledRun {
    file: Arc<PathBuf>,
    offset: u64,
    len: u64,
}

impl SpilledRun {
    /// Whether the run holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A run that is a whole file of `len` bytes.
    pub fn whole(path: PathBuf, len: u64) -> Self {
        SpilledRun {
            file: Arc::new(path),
            offset: 0,
            len,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// The file it is in.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// The run's bytes, read from its file (an error if the file ends before the run).
    pub fn reader(&self) -> Result<impl Read + Send + use<>, String> {
        let opened =
            |e: std::io::Error| format!("reading spilled map output {}: {e}", self.file.display());
        let mut file = File::open(&*self.file).map_err(opened)?;
        file.seek(SeekFrom::Start(self.offset)).map_err(opened)?;
        Ok(Exact {
            inner: file.take(self.len),
            left: self.len,
        })
    }

    /// Reads the run's pairs from its file.
    pub fn open(&self) -> Result<Cursor<'static>, String> {
        Ok(Cursor::new(BufReader::with_capacity(
            READ_BUFFER.min(self.len as usize),
            self.reader()?,
        )))
    }
}

/// Reads exactly a run's length: a file that ends sooner is an error, not a shorter run.
struct Exact<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.left > 0 && !buf.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("the file ends {} bytes before the run does", self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Merges the runs `cursors` read into one sorted run of pair records in a new file at `path`
/// (a key's values keep the runs' order): a pass of a merge in several passes.
pub fn merge_to_file(cursors: Vec<Cursor<'_>>, path: &Path) -> Result<SpilledRun, String> {
    let failed = |e: std::io::Error| format!("writing merged map output {}: {e}", path.display());
    let mut merge = super::records::Merge::of(cursors)?;
    let mut file = std::io::BufWriter::new(File::create(path).map_err(failed)?);
    let (mut groups, mut pairs) = (Vec::new(), Vec::new());
    let mut len = 0u64;
    while merge.next_groups(&mut groups, 256 << 10)? > 0 {
        pairs.clear();
        let mut reader = super::records::Reader::new(&groups);
        while !reader.is_empty() {
            let key = reader.field()?;
            for _ in 0..reader.u32()? {
                let value = reader.field()?;
                super::records::put(&mut pairs, key);
                super::records::put(&mut pairs, value);
            }
        }
        file.write_all(&pairs).map_err(failed)?;
        len += pairs.len() as u64;
    }
    file.flush().map_err(failed)?;
    Ok(SpilledRun::whole(path.to_owned(), len))
}

/// Writes one map attempt's runs (one per partition) into one file `name.runs` in `dir`;
/// returns where each run is, in partition order.
pub fn write(dir: &Path, name: &str, runs: &[Run]) -> std::io::Result<Vec<SpilledRun>> {
    std::fs::create_dir_all(dir)?;
    let path = Arc::new(dir.join(format!("{name}.runs")));
    let mut file = std::io::BufWriter::new(File::create(&*path)?);
    let mut spilled = Vec::with_capacity(runs.len());
    let mut offset = 0;
    for run in runs {
        file.write_all(run.bytes())?;
        let len = run.bytes().len() as u64;
        spilled.push(SpilledRun {
            file: path.clone(),
            offset,
            len,
        });
        offset += len;
    }
    file.flush()?;
    Ok(spilled)
}

/// A map task's sorted run for one partition, where it waits for its reducer.
#[derive(Clone)]
pub enum Held {
    /// In memory.
    Memory(Arc<Run>),
    /// In a file.
    Spilled(SpilledRun),
}

impl Held {
    /// Whether it holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Held::Memory(run) => run.bytes().len() as u64,
            Held::Spilled(run) => run.len(),
        }
    }

    /// Reads its pairs.
    pub fn cursor(&self) -> Result<Cursor<'_>, String> {
        match self {
            Held::Memory(run) => Ok(Cursor::new(run.bytes())),
            Held::Spilled(run) => run.open(),
        }
    }
}

/// While more than `fan_in` of `runs` are in files, merges consecutive runs `fan_in` at a time
/// into new files in `dir` (so ties keep the runs' order); returns the runs left and the
/// files made, removed when they drop.
pub fn premerge(
    mut runs: Vec<Held>,
    dir: &std::path::Path,
    name: &str,
    fan_in: usize,
) -> Result<(Vec<Held>, Vec<Scratch>), String> {
    let fan_in = fan_in.max(2);
    let mut made = Vec::new();
    let mut pass = 0;
    while runs
        .iter()
        .filter(|h| matches!(h, Held::Spilled(_)))
        .count()
        > fan_in
    {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut next = Vec::with_capacity(runs.len().div_ceil(fan_in));
        for (i, group) in runs.chunks(fan_in).enumerate() {
            if let [one] = group {
                next.push(one.clone());
                continue;
            }
            let path = dir.join(format!("{name}-{pass}-{i}.run"));
            let cursors = group.iter().map(Held::cursor).collect::<Result<_, _>>()?;
            made.push(Scratch(path.clone()));
            next.push(Held::Spilled(merge_to_file(cursors, &path)?));
        }
        runs = next;
        pass += 1;
    }
    Ok((runs, made))
}

/// A file removed when dropped.
pub struct Scratch(pub std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mapreduce::records::{self, Merge, sorted_runs};

    fn runs() -> Vec<Run> {
        let mut records = Vec::new();
        for (k, v) in [("b", "1"), ("a", "2"), ("c", "3"), ("a", "4")] {
            for field in [k, v] {
                records.extend_from_slice(&(field.len() as u32).to_le_bytes());
                records.extend_from_slice(field.as_bytes());
            }
        }
        sorted_runs(&records, 2).unwrap()
    }

    fn merged(spilled: &[SpilledRun]) -> Result<Vec<u8>, String> {
        let cursors = spilled
            .iter()
            .map(SpilledRun::open)
            .collect::<Result<_, _>>()?;
        let mut merge = Merge::of(cursors)?;
        let (mut all, mut out) = (Vec::new(), Vec::new());
        while merge.next_groups(&mut out, 1)? > 0 {
            all.extend_from_slice(&out);
        }
        Ok(all)
    }

    #[test]
    fn spilled_runs_read_back_as_in_memory_and_a_short_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let runs = runs();
        let spilled = write(dir.path(), "map-3-1", &runs).unwrap();
        assert_eq!(spilled.len(), 2);
        let in_memory = {
            let mut merge = Merge::new(&runs);
            let (mut all, mut out) = (Vec::new(), Vec::new());
            while merge.next_groups(&mut out, 1).unwrap() > 0 {
                all.extend_from_slice(&out);
            }
            all
        };
        assert!(!in_memory.is_empty());
        assert_eq!(merged(&spilled).unwrap(), in_memory);

        // Cut the file at the start of the last run's last record: reading it fails rather
        // than taking the shorter file for a shorter run.
        let last = crate::mapreduce::records::pairs(runs[1].bytes()).unwrap();
        let (k, v) = last.last().unwrap();
        let file = dir.path().join("map-3-1.runs");
        let len = std::fs::metadata(&file).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.set_len(len - (8 + k.len() + v.len()) as u64).unwrap();
        let err = merged(&spilled).unwrap_err();
        assert!(err.contains("before the run does"), "{err}");
    }

    /// Runs in files beyond the fan-in are merged in passes; the merge of what is left gives
    /// the same groups, values in the same order, as the merge of all the runs at once.
    #[test]
    fn runs_beyond_the_fan_in_are_merged_in_passes_to_the_same_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        for r in 0..30u32 {
            // Every run has keys in common with the others; values name their run.
            let mut pairs = Vec::new();
            for k in (r % 5..40).step_by(3) {
                records::put(&mut pairs, format!("key{k:03}").as_bytes());
                records::put(&mut pairs, format!("{r}").as_bytes());
            }
            let run = records::sorted_runs(&pairs, 1).unwrap().remove(0);
            // Some in memory, most in files.
            if r % 7 == 0 {
                runs.push(Held::Memory(Arc::new(run)));
            } else {
                let written = write(dir.path(), &format!("r{r}"), &[run]).unwrap();
                runs.push(Held::Spilled(written.into_iter().next().unwrap()));
            }
        }
        let all = |runs: &[Held]| {
            let cursors = runs
                .iter()
                .map(Held::cursor)
                .collect::<Result<_, _>>()
                .unwrap();
            let mut merge = Merge::of(cursors).unwrap();
            let (mut out, mut all) = (Vec::new(), Vec::new());
            while merge.next_groups(&mut out, 100).unwrap() > 0 {
                all.extend_from_slice(&out);
            }
            all
        };
        let expected = all(&runs);
        let (left, made) = premerge(runs.clone(), dir.path(), "m", 4).unwrap();
        let in_files = left
            .iter()
            .filter(|h| matches!(h, Held::Spilled(_)))
            .count();
        assert!(in_files <= 4, "{in_files} runs in files left");
        assert!(made.len() > 8, "two passes at least: {} files", made.len());
        assert_eq!(all(&left), expected);
        // Within the fan-in nothing is merged.
        let (same, none) = premerge(runs, dir.path(), "n", 64).unwrap();
        assert_eq!((same.len(), none.len()), (30, 0));
        // The files made are removed with their guards.
        let paths: Vec<_> = made.iter().map(|s| s.0.clone()).collect();
        drop(left);
        drop(made);
        assert!(paths.iter().all(|p| !p.exists()));
    }
}
