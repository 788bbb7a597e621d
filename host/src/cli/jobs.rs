//! `weft job ...`: submit a map/reduce job, follow its progress, show its result.
//!
//! The input is cut into chunks here, on record boundaries, and only the chunks no node holds
//! yet are uploaded: running a job again over the same input uploads nothing.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use super::Client;
use crate::api::{CHUNKS_CONTENT_TYPE, ChunkList, Digests, MAX_CHUNK_UPLOAD};
use crate::blobs::MAX_ASKED;
use crate::id::Digest;
use crate::mapreduce::plan::{Chunk, Cut, InputChunk, Records, parse_chunk_size};
use crate::mapreduce::{JobRecord, JobStatus, OutputRecord, Top};

#[derive(Debug, Subcommand)]
pub(super) enum JobCommand {
    /// Run a map/reduce function over input files and wait for the result.
    ///
    /// Example: weft job run wordcount --input books/ --reducers 8
    Run {
        /// The map/reduce function.
        name: String,
        /// Input files or directories (every file below, in path order).
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// What a record is: `lines`, or `length-prefixed` (a 4-byte little-endian length,
        /// then that many bytes; every file must hold whole records). A chunk, one map
        /// task's input, always holds whole records.
        #[arg(long, default_value = "lines")]
        records: Records,
        /// Reducer partitions.
        #[arg(long, default_value_t = 4)]
        reducers: u32,
        /// Target size of an input chunk, one map task's input (64KiB to 64MiB). Larger
        /// chunks combine more map output before the shuffle; smaller ones spread a small
        /// input over more tasks.
        #[arg(long, default_value = "4MiB", value_parser = parse_chunk_size)]
        chunk_size: usize,
        /// Print the final job record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a job.
    ///
    /// Example: weft job status 04bda417134e73cb99139609c395fa43
    Status {
        /// The job's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    ///
    /// Example: weft job list
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's full output as JSON lines.
    ///
    /// Example: weft job output 04bda417134e73cb99139609c395fa43 > counts.jsonl
    Output {
        /// The job's id.
        id: String,
    },
    /// Show a job's result: its records with the largest values (the summary's order).
    ///
    /// Example: weft job result 04bda417134e73cb99139609c395fa43 --top 20
    Result {
        /// The job's id.
        id: String,
        /// How many records to show.
        #[arg(long, default_value_t = 10)]
        top: usize,
        /// Also write the whole output (JSON lines) to this file.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Stop a running job.
    ///
    /// Example: weft job cancel 04bda417134e73cb99139609c395fa43
    Cancel {
        /// The job's id.
        id: String,
    },
    /// Forget an ended job (its records; its output's blobs stay on disk).
    ///
    /// Example: weft job delete 04bda417134e73cb99139609c395fa43
    Delete {
        /// The job's id.
        id: String,
    },
}

pub(super) async fn run(c: &Client, command: &JobCommand) -> anyhow::Result<()> {
    match command {
        JobCommand::Run {
            name,
            input,
            reducers,
            chunk_size,
            records,
            json,
        } => {
            let mut sources = Vec::new();
            for path in input {
                files_under(path, &mut sources)?;
            }
            let cut = Cut {
                size: *chunk_size,
                records: *records,
            };
            let job = run_job(c, name, sources, *reducers, cut, !json).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print_summary(c, &job);
            }
            if job.status != JobStatus::Succeeded {
                anyhow::bail!(
                    "job {} failed: {}",
                    job.id,
                    job.error.as_deref().unwrap_or("no reason given")
                );
            }
            Ok(())
        }
        JobCommand::Status { id, json } => {
            let job: JobRecord = c
                .json(c.request(Method::GET, &format!("/v1/jobs/{id}")))
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&job)?);
            } else {
                print_summary(c, &job);
            }
            Ok(())
        }
        JobCommand::List { json } => {
            let jobs: Vec<JobRecord> = c.json(c.request(Method::GET, "/v1/jobs")).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&jobs)?);
            } else {
                println!(
                    "{:<32}  {:<16} {:<9} {:>10} {:>9}",
                    "ID", "FUNCTION", "STATUS", "RECORDS", "MS"
                );
                for j in jobs {
                    println!(
                        "{:<32}  {:<16} {:<9} {:>10} {:>9}",
                        j.id.to_string(),
                        j.function.as_str(),
                        format!("{:?}", j.status).to_lowercase(),
                        j.output_records,
                        j.elapsed_ms
                    );
                }
            }
            Ok(())
        }
        JobCommand::Result { id, top, output } => {
            let job: JobRecord = c
                .json(c.request(Method::GET, &format!("/v1/jobs/{id}")))
                .await?;
            let resp = c
                .send(c.request(Method::GET, &format!("/v1/jobs/{id}/output")))
                .await?;
            let mut file = match output {
                Some(path) => Some(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => None,
            };
            let mut best = Top::new(*top);
            let mut lines = LineStream::default();
            let mut stream = resp.bytes_stream();
            use futures::StreamExt;
            use std::io::Write;
            while let Some(piece) = stream.next().await {
                let piece = piece.context("reading the output")?;
                if let Some(f) = file.as_mut() {
                    f.write_all(&piece)?;
                }
                let records = lines
                    .push(&piece)
                    .iter()
                    .map(|line| serde_json::from_slice(line).context("a line of the output"))
                    .collect::<anyhow::Result<Vec<OutputRecord>>>()?;
                best.add(records);
            }
            if let Some(mut f) = file {
                f.flush()?;
            }
            let status = format!("{:?}", job.status).to_lowercase();
            println!(
                "job {} ({}) {status}: {} output records",
                job.id, job.function, job.output_records
            );
            print_records(&best.best());
            if let Some(path) = output {
                println!("the whole output is in {}", path.display());
            }
            Ok(())
        }
        JobCommand::Cancel { id } => {
            let job: JobRecord = c
                .json(c.request(Method::POST, &format!("/v1/jobs/{id}/cancel")))
                .await?;
            println!(
                "job {} ({}): cancel asked; it was {}",
                job.id,
                job.function,
                format!("{:?}", job.status).to_lowercase()
            );
            Ok(())
        }
        JobCommand::Delete { id } => {
            c.send(c.request(Method::DELETE, &format!("/v1/jobs/{id}")))
                .await?;
            println!("job {id} deleted");
            Ok(())
        }
        JobCommand::Output { id } => {
            let resp = c
                .send(c.request(Method::GET, &format!("/v1/jobs/{id}/output")))
                .await?;
            let bytes = resp.bytes().await.context("reading the output")?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
            Ok(())
        }
    }
}

/// Where part of a job's input comes from.
pub(super) enum Source {
    /// A file.
    File(PathBuf),
    /// Bytes at hand.
    Bytes(Vec<u8>),
}

/// `path` as sources: the file, or every file below the directory, in path order.
fn files_under(path: &Path, out: &mut Vec<Source>) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.is_file() {
        out.push(Source::File(path.to_path_buf()));
        return Ok(());
    }
    if !meta.is_dir() {
        anyhow::bail!(
            "{} is neither a file nor a directory: the input is read twice (once to find which chunks the cluster lacks, once to upload them), so save it to a file first",
            path.display()
        );
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("listing {}", path.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("listing {}", path.display()))?;
    entries.sort();
    for e in entries {
        files_under(&e, out)?;
    }
    Ok(())
}

/// Reads `sources` as one stream of records (a source of lines that does not end with a
/// newline gets one; a source of length-prefixed records must end with a whole record) and
/// hands each chunk to `each`, until it says stop.
fn read_chunks(
    sources: &[Source],
    cut: Cut,
    mut each: impl FnMut(Chunk) -> bool,
) -> anyhow::Result<()> {
    let mut chunker = cut.chunker();
    let mut buf = vec![0; 1 << 20];
    let mut feed = |chunker: &mut crate::mapreduce::plan::Chunker, bytes: &[u8]| {
        chunker.push(bytes).into_iter().all(&mut each)
    };
    for source in sources {
        let mut last = None;
        match source {
            Source::Bytes(b) => {
                if !feed(&mut chunker, b) {
                    return Ok(());
                }
                last = b.last().copied();
            }
            Source::File(path) => {
                let mut f = std::fs::File::open(path)
                    .with_context(|| format!("opening {}", path.display()))?;
                loop {
                    let n = f
                        .read(&mut buf)
                        .with_context(|| format!("reading {}", path.display()))?;
                    if n == 0 {
                        break;
                    }
                    last = Some(buf[n - 1]);
                    if !feed(&mut chunker, &buf[..n]) {
                        return Ok(());
                    }
                }
            }
        }
        if cut.records == Records::Lines {
            if last.is_some_and(|b| b != b'\n') && !feed(&mut chunker, b"\n") {
                return Ok(());
            }
        } else if !chunker.at_boundary() {
            let what = match source {
                Source::File(path) => path.display().to_string(),
                Source::Bytes(_) => "the input".to_string(),
            };
            anyhow::bail!(
                "{what} ends inside a length-prefixed record: every file of the input must hold whole records (each a 4-byte little-endian length, then that many bytes)"
            );
        }
    }
    if let Some(chunk) = chunker.finish()? {
        each(chunk);
    }
    Ok(())
}

/// Cuts `sources` into chunks and uploads the ones no node holds; returns the chunks, and how
/// many chunks and bytes were uploaded.
async fn upload_input(
    c: &Client,
    sources: Arc<Vec<Source>>,
    cut: Cut,
    progress: bool,
) -> anyhow::Result<(Vec<InputChunk>, usize, u64)> {
    let s = sources.clone();
    let chunks = tokio::task::spawn_blocking(move || {
        let mut chunks = Vec::new();
        let mut at = 0u64;
        let mut too_long = None;
        read_chunks(&s, cut, |c| {
            if c.bytes.len() as u64 > MAX_CHUNK_UPLOAD {
                too_long = Some((at, c.bytes.len()));
                return false;
            }
            at += c.bytes.len() as u64;
            chunks.push(c.input());
            true
        })?;
        if let Some((at, len)) = too_long {
            anyhow::bail!(
                "a record of {len} bytes starts at byte {at} of the input (the files in order): records are lines, and an input chunk may be at most {} MiB",
                MAX_CHUNK_UPLOAD >> 20
            );
        }
        Ok(chunks)
    })
    .await??;
    let mut missing = HashSet::new();
    let digests: Vec<Digest> = chunks.iter().map(|c| c.digest).collect();
    for batch in digests.chunks(MAX_ASKED) {
        let asked = Digests {
            digests: batch.to_vec(),
        };
        let answer: Digests = c
            .json(
                c.request(Method::POST, "/v1/jobs/input/missing")
                    .json(&asked),
            )
            .await?;
        missing.extend(answer.digests);
    }
    let distinct: std::collections::HashMap<Digest, u64> =
        chunks.iter().map(|c| (c.digest, c.size)).collect();
    let to_upload: u64 = missing.iter().filter_map(|d| distinct.get(d)).sum();
    let bar = if progress && !missing.is_empty() {
        ProgressBar::new(to_upload)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} uploading input {bar:30} {bytes}/{total_bytes} ({bytes_per_sec})",
        )
        .expect("valid template"),
    );
    let (mut uploaded, mut uploaded_bytes) = (0, 0);
    if !missing.is_empty() {
        // Read the chunks again, sending the missing ones (each once) as they come.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Chunk>(2);
        let mut wanted = missing;
        let reading = tokio::task::spawn_blocking(move || {
            read_chunks(&sources, cut, |c| {
                !wanted.remove(&c.digest) || tx.blocking_send(c).is_ok()
            })?;
            if !wanted.is_empty() {
                anyhow::bail!(
                    "the input changed while it was read: {} of its chunks were not there the second time; run the job again once the files stay put",
                    wanted.len()
                );
            }
            Ok(())
        });
        while let Some(chunk) = rx.recv().await {
            let size = chunk.bytes.len() as u64;
            c.send(
                c.request(Method::PUT, &format!("/v1/jobs/input/{}", chunk.digest))
                    .body(chunk.bytes),
            )
            .await
            .with_context(|| format!("uploading input chunk {}", chunk.digest))?;
            uploaded += 1;
            uploaded_bytes += size;
            bar.inc(size);
        }
        reading.await??;
    }
    bar.finish_and_clear();
    Ok((chunks, uploaded, uploaded_bytes))
}

/// How often `weft job run` shows a running job's progress.
const POLL: Duration = Duration::from_millis(100);

/// Uploads the input chunks no node holds, submits a job over them and polls it to the end,
/// drawing progress bars on stderr when `progress`.
pub(super) async fn run_job(
    c: &Client,
    function: &str,
    sources: Vec<Source>,
    reducers: u32,
    cut: Cut,
    progress: bool,
) -> anyhow::Result<JobRecord> {
    let (chunks, uploaded, uploaded_bytes) =
        upload_input(c, Arc::new(sources), cut, progress).await?;
    let total: u64 = chunks.iter().map(|c| c.size).sum();
    let distinct: HashSet<Digest> = chunks.iter().map(|c| c.digest).collect();
    eprintln!(
        "input: {} chunks, {}; uploaded {uploaded} ({}), {} already held by the cluster",
        chunks.len(),
        mib(total),
        mib(uploaded_bytes),
        distinct.len() - uploaded
    );
    let list = serde_json::to_vec(&ChunkList { chunks })?;
    let submitted: JobRecord = c
        .json(
            c.request(Method::POST, "/v1/jobs")
                .query(&[
                    ("function", function.to_string()),
                    ("reducers", reducers.to_string()),
                ])
                .header(reqwest::header::CONTENT_TYPE, CHUNKS_CONTENT_TYPE)
                .body(list),
        )
        .await?;
    let bar = if progress {
        ProgressBar::new(0)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} tasks  {msg}",
        )
        .expect("valid template"),
    );
    let mut job = submitted;
    loop {
        let p = job.progress;
        bar.set_length((p.maps_total + p.reduces_total) as u64);
        bar.set_position((p.maps_done + p.reduces_done) as u64);
        let secs = (job.elapsed_ms.max(1) as f64) / 1000.0;
        let mut spilled = if job.spilled_bytes > 0 {
            format!(", {} of runs on disk", mib(job.spilled_bytes))
        } else {
            String::new()
        };
        if job.fetched_bytes > 0 {
            spilled.push_str(&format!(", {} pulled", mib(job.fetched_bytes)));
        }
        if p.retries > 0 {
            spilled.push_str(&format!("  retries {}", p.retries));
        }
        bar.set_message(format!(
            "map {}/{} ({:.1} MB/s)  shuffled {}{spilled}  reduce {}/{}",
            p.maps_done,
            p.maps_total,
            job.mapped_bytes as f64 / 1e6 / job.map_ms.map_or(secs, |m| m.max(1) as f64 / 1000.0),
            mib(job.shuffled_bytes),
            p.reduces_done,
            p.reduces_total
        ));
        if job.status != JobStatus::Running {
            break;
        }
        // The node answers as soon as the job ends, or after 100 ms with its progress (a
        // node that does not know `wait_ms` answers at once: then wait here).
        let asked = std::time::Instant::now();
        job = c
            .json(
                c.request(Method::GET, &format!("/v1/jobs/{}", job.id))
                    .query(&[("wait_ms", POLL.as_millis().to_string())]),
            )
            .await?;
        if job.status == JobStatus::Running {
            tokio::time::sleep(POLL.saturating_sub(asked.elapsed())).await;
        }
    }
    bar.finish_and_clear();
    Ok(job)
}

/// Splits a stream of bytes into lines.
#[derive(Default)]
struct LineStream {
    pending: Vec<u8>,
}

impl LineStream {
    fn push(&mut self, piece: &[u8]) -> Vec<Vec<u8>> {
        self.pending.extend_from_slice(piece);
        let mut lines = Vec::new();
        while let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
            let rest = self.pending.split_off(i + 1);
            let mut line = std::mem::replace(&mut self.pending, rest);
            line.pop();
            lines.push(line);
        }
        lines
    }
}

/// One line per record: its key (text as it is) and its value.
fn print_records(records: &[OutputRecord]) {
    for r in records {
        let key = r
            .key
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| r.key.to_string());
        println!("  {key:<24} {}", r.value);
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn print_summary(c: &Client, job: &JobRecord) {
    let status = format!("{:?}", job.status).to_lowercase();
    println!(
        "job {} ({}) {status} in {:.2} s: {} input bytes, {} map tasks, {} reducers, {} output records",
        job.id,
        job.function,
        job.elapsed_ms as f64 / 1000.0,
        job.input_bytes,
        job.progress.maps_total,
        job.reducers,
        job.output_records
    );
    if let Some(e) = &job.error {
        println!("error: {e}");
    }
    if !job.tasks_by_node.is_empty() {
        let nodes: Vec<String> = job
            .tasks_by_node
            .iter()
            .map(|(n, t)| format!("{n} {t}"))
            .collect();
        let p = &job.progress;
        println!(
            "attempts by node: {}; maps next to their chunk {}/{}; retries {}, speculative {}, maps run again {}; {} pulled between nodes",
            nodes.join(", "),
            p.maps_local,
            p.maps_started,
            p.retries,
            p.speculative,
            p.maps_recomputed,
            mib(job.fetched_bytes)
        );
    }
    if !job.top.is_empty() {
        println!("top records:");
        print_records(&job.top);
    }
    if job.status == JobStatus::Succeeded {
        println!(
            "full output: weft job output {}   (or GET {}/v1/jobs/{}/output)",
            job.id,
            c.base(),
            job.id
        );
    }
}
