//! `weft kv ...` and `weft status`: the replicated key-value store and the ring, over HTTP.

use std::io::{Read as _, Write as _};

use anyhow::Context;
use clap::Subcommand;
use reqwest::Method;

use super::Client;
use crate::api::NodeStatus;
use crate::api::{ScanPage, Written};

/// A read or write made under a lock, checked against its fencing token.
#[derive(Debug, clap::Args)]
pub(super) struct UnderLock {
    /// Made under this lock (taken with `weft lock acquire`): refused once anyone has read or
    /// written under a later grant of it.
    #[arg(long, requires = "lock_token")]
    lock: Option<String>,
    /// The fencing token `weft lock acquire` printed.
    #[arg(long, requires = "lock")]
    lock_token: Option<u64>,
}

impl UnderLock {
    fn query(&self) -> Vec<(&'static str, String)> {
        match (&self.lock, self.lock_token) {
            (Some(lock), Some(token)) => vec![("lock", lock.clone()), ("token", token.to_string())],
            _ => Vec::new(),
        }
    }
}

#[derive(Debug, Subcommand)]
pub(super) enum KvCommand {
    /// Print the value under a key (and its version, and the time it has left if it expires,
    /// on stderr).
    ///
    /// Example: weft kv get users alice
    Get {
        /// The namespace (a function's own is `fn.NAME`).
        ns: String,
        /// The key.
        key: String,
        /// Replicas that must answer (default: the namespace's R).
        #[arg(long)]
        r: Option<u8>,
        #[command(flatten)]
        under: UnderLock,
    },
    /// Store a value under a key; prints the new version.
    ///
    /// Example: weft kv put sessions abc123 '{"user":7}' --ttl 30m
    Put {
        /// The namespace.
        ns: String,
        /// The key.
        key: String,
        /// The value; `-` reads it from stdin, `@FILE` from a file.
        value: String,
        /// Replicas that must flush it first (default: the namespace's W).
        #[arg(long)]
        w: Option<u8>,
        /// Only if the key is at this version (from `get`).
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<String>,
        /// Only if the key does not exist.
        #[arg(long)]
        if_absent: bool,
        /// The value expires this long after the write (`30s`, `5m`, `1h`): from then on the
        /// key reads as absent on every node. Without it the value does not expire (and a
        /// write without it makes an expiring key lasting).
        #[arg(long, value_parser = crate::millis::parse)]
        ttl: Option<std::time::Duration>,
        #[command(flatten)]
        under: UnderLock,
    },
    /// Delete a key; prints the version of the deletion.
    ///
    /// Example: weft kv del users alice
    Del {
        /// The namespace.
        ns: String,
        /// The key.
        key: String,
        /// Only if the key is at this version.
        #[arg(long)]
        if_version: Option<String>,
        #[command(flatten)]
        under: UnderLock,
    },
    /// List keys and values in key order.
    ///
    /// Example: weft kv scan users --prefix a --limit 20
    Scan {
        /// The namespace.
        ns: String,
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many keys (all pages are fetched up to it).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// `/v1/kv/{ns}/{key}` with the key percent-encoded.
fn path(ns: &str, key: &str) -> String {
    format!("/v1/kv/{ns}/{}", crate::api::percent_encode(key))
}

pub(super) async fn run(c: &Client, command: &KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Get { ns, key, r, under } => {
            let mut req = c.request(Method::GET, &path(ns, key)).query(&under.query());
            if let Some(r) = r {
                req = req.query(&[("r", r)]);
            }
            let resp = c.send(req).await?;
            let version = resp
                .headers()
                .get(crate::api::VERSION_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("?")
                .to_string();
            let resp_ttl: Option<u64> = resp
                .headers()
                .get(crate::api::TTL_HEADER)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            let bytes = resp.bytes().await.context("reading the value")?;
            std::io::stdout().write_all(&bytes)?;
            if !bytes.ends_with(b"\n") && std::str::from_utf8(&bytes).is_ok() {
                println!();
            }
            match resp_ttl {
                Some(ms) => eprintln!(
                    "version {version}, expires in {}",
                    crate::millis::show(std::time::Duration::from_millis(ms))
                ),
                None => eprintln!("version {version}"),
            }
            Ok(())
        }
        KvCommand::Put {
            ns,
            key,
            value,
            w,
            if_version,
            if_absent,
            ttl,
            under,
        } => {
            let body = match value.as_str() {
                "-" => {
                    let mut b = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut b)
                        .context("reading stdin")?;
                    b
                }
                v if v.starts_with('@') => {
                    std::fs::read(&v[1..]).with_context(|| format!("reading {}", &v[1..]))?
                }
                v => v.as_bytes().to_vec(),
            };
            let mut query: Vec<(&str, String)> = under.query();
            if let Some(w) = w {
                query.push(("w", w.to_string()));
            }
            if let Some(v) = if_version {
                query.push(("if_version", v.clone()));
            }
            if *if_absent {
                query.push(("if_absent", "true".into()));
            }
            if let Some(ttl) = ttl {
                query.push(("ttl", crate::millis::show(*ttl)));
            }
            let written: Written = c
                .json(
                    c.request(Method::PUT, &path(ns, key))
                        .query(&query)
                        .body(body),
                )
                .await?;
            println!("version {}", written.version);
            Ok(())
        }
        KvCommand::Del {
            ns,
            key,
            if_version,
            under,
        } => {
            let mut req = c
                .request(Method::DELETE, &path(ns, key))
                .query(&under.query());
            if let Some(v) = if_version {
                req = req.query(&[("if_version", v)]);
            }
            let written: Written = c.json(req).await?;
            println!("deleted at version {}", written.version);
            Ok(())
        }
        KvCommand::Scan {
            ns,
            prefix,
            limit,
            json,
        } => {
            let mut start = String::new();
            let mut left = *limit;
            while left > 0 {
                let page: ScanPage = c
                    .json(c.request(Method::GET, &format!("/v1/kv/{ns}")).query(&[
                        ("prefix", prefix.as_str()),
                        ("start", start.as_str()),
                        ("limit", &left.min(1000).to_string()),
                    ]))
                    .await?;
                for m in &page.missing {
                    eprintln!("warning: no answer from {m}; keys only it holds are missing");
                }
                left -= page.entries.len().min(left);
                for e in &page.entries {
                    if *json {
                        println!("{}", serde_json::to_string(e)?);
                    } else {
                        let key = e.key.clone().unwrap_or_else(|| {
                            format!("0x{}", e.key_hex.clone().unwrap_or_default())
                        });
                        let value = e.value.clone().unwrap_or_else(|| {
                            format!("0x{}", e.value_hex.clone().unwrap_or_default())
                        });
                        println!("{key}\t{value}");
                    }
                }
                match page.next {
                    Some(next) => start = next,
                    None => break,
                }
            }
            Ok(())
        }
    }
}

/// `weft status`: the ring and replication as the node sees them.
pub(super) async fn status(c: &Client, json: bool) -> anyhow::Result<()> {
    let s: NodeStatus = c.json(c.request(Method::GET, "/v1/status")).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    print!("{}", status_text(&s));
    Ok(())
}

/// The status as text.
pub fn status_text(status: &NodeStatus) -> String {
    use std::fmt::Write;
    let s = &status.ring;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {}: {} nodes on the ring, {} virtual nodes each; N/R/W {}{}",
        s.node,
        s.nodes.len(),
        s.vnodes,
        s.default,
        if s.in_transition {
            " (in transition: earlier owners still consulted)"
        } else {
            ""
        }
    );
    for (ns, q) in &s.namespaces {
        let _ = writeln!(out, "  namespace {ns}: N/R/W {q}");
    }
    let _ = writeln!(
        out,
        "{:<16} {:>7} {:>9} {:>7}  ANTI-ENTROPY",
        "NODE", "OWNS", "REPLICAS", "HINTS"
    );
    for n in &s.nodes {
        let sync = match &n.sync {
            _ if n.node == s.node => "(this node)".to_string(),
            None => "not compared yet".to_string(),
            Some(p) if p.error.is_some() => {
                format!("failed: {}", p.error.as_deref().unwrap_or_default())
            }
            Some(p) if p.in_sync => "in sync".to_string(),
            Some(p) => format!(
                "{} ranges differed; pulled {}, pushed {}",
                p.differing, p.pulled, p.pushed
            ),
        };
        let _ = writeln!(
            out,
            "{:<16} {:>6.1}% {:>8.1}% {:>7}  {}",
            n.node.as_str(),
            n.share * 100.0,
            n.replica_share * 100.0,
            n.hints,
            sync
        );
    }
    let lag = match s.anti_entropy_lag_ms {
        Some(ms) => format!("{:.1} s ago", ms as f64 / 1000.0),
        None => "never yet".to_string(),
    };
    let _ = writeln!(
        out,
        "{} entries held here, {} hints; anti-entropy every {:.0} s, {} rounds, all peers last in sync {lag}",
        s.keys,
        s.hints,
        s.anti_entropy_interval_ms as f64 / 1000.0,
        s.anti_entropy_rounds
    );
    let g = &status.consensus;
    let names = |ms: &[crate::consensus::GroupMember]| {
        let v: Vec<String> = ms
            .iter()
            .map(|m| match m.lag {
                Some(lag) if lag > 0 => format!("{} ({lag} behind)", m.name),
                _ => m.name.clone(),
            })
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    if g.voters.is_empty() && g.learners.is_empty() {
        let _ = writeln!(out, "metadata group: this node is in no group yet");
    } else {
        let _ = writeln!(
            out,
            "metadata group: this node {}, leader {}, term {}; voters {}; learners {}; log {}, committed {}, applied {}, snapshot {}",
            g.role,
            g.leader.as_deref().unwrap_or("unknown"),
            g.term,
            names(&g.voters),
            names(&g.learners),
            g.last_log_index.map_or("empty".into(), |i| i.to_string()),
            g.committed_index.map_or("none".into(), |i| i.to_string()),
            g.applied_index.map_or("none".into(), |i| i.to_string()),
            g.snapshot_index.map_or("none".into(), |i| i.to_string()),
        );
    }
    out
}
