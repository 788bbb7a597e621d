//! `weft lock ...` and `weft locks`: the lock service, over HTTP.

use std::fmt::Write as _;

use clap::Subcommand;
use reqwest::Method;

use super::Client;
use crate::locks::{Grant, LockView};

#[derive(Debug, Subcommand)]
pub(super) enum LockCommand {
    /// Take a lock; prints its fencing token.
    ///
    /// Example: weft lock acquire deploys --lease 30s --wait 10s
    Acquire {
        /// The lock's key.
        key: String,
        /// The lease (`10s`, `500ms`; node default 10s). Count it from when you ran the
        /// command: renew before it runs out.
        #[arg(long)]
        lease: Option<String>,
        /// How long to wait in line while another holds it (default `0s`: fail at once).
        #[arg(long)]
        wait: Option<String>,
        /// Who asks, as others see it (default: a new name for this request).
        #[arg(long)]
        holder: Option<String>,
    },
    /// Keep a lock for another lease.
    ///
    /// Example: weft lock renew deploys 42
    Renew {
        /// The lock's key.
        key: String,
        /// The fencing token `acquire` printed (positional: `--token` is the API token).
        #[arg(value_name = "TOKEN")]
        fencing_token: u64,
    },
    /// Let a lock go (the first waiter gets it).
    ///
    /// Example: weft lock release deploys 42
    Release {
        /// The lock's key.
        key: String,
        /// The fencing token `acquire` printed (positional: `--token` is the API token).
        #[arg(value_name = "TOKEN")]
        fencing_token: u64,
    },
}

fn path(key: &str) -> anyhow::Result<String> {
    let key: crate::id::LockKey = key.parse()?;
    Ok(format!("/v1/locks/{key}"))
}

pub(super) async fn run(client: &Client, command: &LockCommand) -> anyhow::Result<()> {
    match command {
        LockCommand::Acquire {
            key,
            lease,
            wait,
            holder,
        } => {
            let mut query: Vec<(&str, &str)> = Vec::new();
            for (name, value) in [("lease", lease), ("wait", wait), ("holder", holder)] {
                if let Some(v) = value {
                    query.push((name, v));
                }
            }
            let req = client.request(Method::POST, &path(key)?).query(&query);
            let grant: Grant = client.json(req).await?;
            println!("{}", grant.token);
            eprintln!(
                "lock `{}` held by {} under token {}, lease {} ms",
                grant.key, grant.holder, grant.token, grant.lease_ms
            );
        }
        LockCommand::Renew {
            key,
            fencing_token: token,
        } => {
            let req = client
                .request(Method::POST, &format!("{}/renew", path(key)?))
                .query(&[("token", token)]);
            let grant: Grant = client.json(req).await?;
            eprintln!(
                "lock `{}` renewed: token {}, lease {} ms",
                grant.key, grant.token, grant.lease_ms
            );
        }
        LockCommand::Release {
            key,
            fencing_token: token,
        } => {
            let req = client
                .request(Method::DELETE, &path(key)?)
                .query(&[("token", token)]);
            client.send(req).await?;
            eprintln!("lock `{key}` released");
        }
    }
    Ok(())
}

/// `weft locks`.
pub(super) async fn list(client: &Client, json: bool) -> anyhow::Result<()> {
    let locks: Vec<LockView> = client
        .json(client.request(Method::GET, "/v1/locks"))
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&locks)?);
    } else {
        print!("{}", table(&locks));
    }
    Ok(())
}

fn table(locks: &[LockView]) -> String {
    let mut out = String::new();
    if locks.is_empty() {
        out.push_str("no locks are held\n");
        return out;
    }
    let _ = writeln!(out, "KEY\tHOLDER\tTOKEN\tLEASE LEFT\tWAITERS");
    for l in locks {
        let left = l
            .lease_left_ms
            .map_or("?".into(), |ms| format!("{:.1}s", ms as f64 / 1000.0));
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            l.key,
            l.holder,
            l.token,
            left,
            if l.waiters.is_empty() {
                "-".into()
            } else {
                l.waiters.join(", ")
            }
        );
    }
    out
}
