//! `weft job ...`: submit a map/reduce job, follow its progress, show its result.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use reqwest::Method;

use super::Client;
use crate::mapreduce::{JobRecord, JobStatus};

#[derive(Debug, Subcommand)]
pub(super) enum JobCommand {
    /// Run a map/reduce function over input files and wait for the result.
    Run {
        /// The map/reduce function.
        name: String,
        /// Input files; records are lines.
        #[arg(long, required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// Reducer partitions.
        #[arg(long, default_value_t = 4)]
        reducers: u32,
        /// Print the final job record as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a job.
    Status {
        /// The job's id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List jobs.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print a job's full output as JSON lines.
    Output {
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
            json,
        } => {
            let mut body = Vec::new();
            for f in input {
                let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                body.extend_from_slice(&bytes);
                if !body.is_empty() && !body.ends_with(b"\n") {
                    body.push(b'\n');
                }
            }
            let job = run_job(c, name, body, *reducers, !json).await?;
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

/// Submits a job and polls it to the end, drawing a progress bar on stderr when `progress`.
pub(super) async fn run_job(
    c: &Client,
    function: &str,
    input: Vec<u8>,
    reducers: u32,
    progress: bool,
) -> anyhow::Result<JobRecord> {
    let submitted: JobRecord = c
        .json(
            c.request(Method::POST, "/v1/jobs")
                .query(&[
                    ("function", function.to_string()),
                    ("reducers", reducers.to_string()),
                ])
                .body(input),
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
        bar.set_message(format!(
            "map {}/{}  reduce {}/{}",
            p.maps_done, p.maps_total, p.reduces_done, p.reduces_total
        ));
        if job.status != JobStatus::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        job = c
            .json(c.request(Method::GET, &format!("/v1/jobs/{}", job.id)))
            .await?;
    }
    bar.finish_and_clear();
    Ok(job)
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
    if !job.top.is_empty() {
        println!("top records:");
        for r in &job.top {
            let key = r
                .key
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| r.key.to_string());
            println!("  {key:<24} {}", r.value);
        }
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
