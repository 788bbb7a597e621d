//! `weft token create|list|revoke` (scoped API tokens) and `weft cluster deny|allow|denied`
//! (the nodes every node refuses): access to the cluster, over HTTP (needs an admin token).

use std::fmt::Write as _;

use clap::Subcommand;
use reqwest::Method;

use super::Client;
use crate::tokens::{Created, Scope, TokenInfo};

#[derive(Debug, Subcommand)]
pub(super) enum TokenCommand {
    /// Create a token; prints it (once: the cluster keeps only its hash).
    ///
    /// Scopes, each allowing what the ones before it do: `read` (key-value reads, jobs and
    /// their output, the lock list), `invoke` (key-value writes, submitting and cancelling
    /// jobs, locks), `deploy` (deploy, roll back, delete functions), `admin` (tokens, the deny list).
    ///
    /// Example: weft token create --scope read --namespace fn.counter --expires 30d --name grafana
    Create {
        /// What it allows: read, invoke, deploy or admin.
        #[arg(long)]
        scope: Scope,
        /// Limit it to one key-value namespace (read and invoke tokens only).
        #[arg(long)]
        namespace: Option<String>,
        /// How long it works (`12h`, `30d`); without it, until revoked.
        #[arg(long)]
        expires: Option<String>,
        /// What it is for, shown by `weft token list`.
        #[arg(long, default_value = "")]
        name: String,
    },
    /// List the scoped tokens (never their secrets).
    ///
    /// Example: weft token list
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token: every node refuses it from then on.
    ///
    /// Example: weft token revoke 3f9a1c0d2b7e
    Revoke {
        /// Its id, as `weft token list` shows it.
        id: String,
    },
}

pub(super) async fn run(client: &Client, command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            scope,
            namespace,
            expires,
            name,
        } => {
            let mut query: Vec<(&str, &str)> = vec![("scope", scope.as_str()), ("name", name)];
            if let Some(ns) = namespace {
                query.push(("namespace", ns));
            }
            if let Some(e) = expires {
                query.push(("expires", e));
            }
            let req = client.request(Method::POST, "/v1/tokens").query(&query);
            let created: Created = client.json(req).await?;
            println!("{}", created.token);
            eprintln!(
                "token {} created: scope {}{}{}; it is shown only this once",
                created.info.id,
                created.info.scope,
                created
                    .info
                    .namespace
                    .as_ref()
                    .map_or(String::new(), |ns| format!(", namespace {ns}")),
                created
                    .info
                    .expires_ms
                    .map_or(String::new(), |ms| format!(", expires {}", when(ms))),
            );
        }
        TokenCommand::List { json } => {
            let tokens: Vec<TokenInfo> = client
                .json(client.request(Method::GET, "/v1/tokens"))
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print!("{}", table(&tokens));
            }
        }
        TokenCommand::Revoke { id } => {
            let id: crate::id::TokenId = id.parse()?;
            client
                .send(client.request(Method::DELETE, &format!("/v1/tokens/{id}")))
                .await?;
            eprintln!("token {id} revoked");
        }
    }
    Ok(())
}

/// `weft cluster deny|allow|denied`.
pub(super) async fn deny_list(
    client: &Client,
    command: &super::ClusterCommand,
) -> anyhow::Result<()> {
    use super::ClusterCommand;
    match command {
        ClusterCommand::Deny { name, reason } => {
            let node: crate::id::NodeId = name.parse()?;
            let req = client
                .request(Method::PUT, &format!("/v1/denied/{node}"))
                .query(&[("reason", reason)]);
            client.send(req).await?;
            eprintln!("node `{node}` denied: every node refuses it");
        }
        ClusterCommand::Allow { name } => {
            let node: crate::id::NodeId = name.parse()?;
            client
                .send(client.request(Method::DELETE, &format!("/v1/denied/{node}")))
                .await?;
            eprintln!("node `{node}` allowed again");
        }
        ClusterCommand::Denied { json } => {
            let denied: Vec<crate::denylist::DeniedNode> = client
                .json(client.request(Method::GET, "/v1/denied"))
                .await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&denied)?);
            } else if denied.is_empty() {
                println!("no node is denied");
            } else {
                println!("NODE\tSINCE\tREASON");
                for d in &denied {
                    let reason = if d.reason.is_empty() { "-" } else { &d.reason };
                    println!("{}\t{}\t{reason}", d.node, when(d.since_ms));
                }
            }
        }
        _ => unreachable!("only deny-list commands come here"),
    }
    Ok(())
}

fn table(tokens: &[TokenInfo]) -> String {
    let mut out = String::new();
    if tokens.is_empty() {
        out.push_str("no scoped tokens (the cluster's own token is not listed)\n");
        return out;
    }
    let _ = writeln!(out, "ID\tSCOPE\tNAMESPACE\tCREATED\tEXPIRES\tNAME");
    for t in tokens {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}",
            t.id,
            t.scope,
            t.namespace.as_ref().map_or("-", |n| n.as_str()),
            when(t.created_ms),
            t.expires_ms.map_or("never".into(), when),
            if t.name.is_empty() { "-" } else { &t.name },
        );
    }
    out
}

/// A Unix time in milliseconds as a UTC date and time (`2026-12-04 13:05Z`).
fn when(ms: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => format!("{ms} ms after 1970"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_show_as_utc_dates() {
        for (ms, shown) in [
            (0, "1970-01-01 00:00Z"),
            (951_782_400_000, "2000-02-29 00:00Z"),
            (1_796_396_700_000, "2026-12-04 15:05Z"),
        ] {
            assert_eq!(super::when(ms), shown);
        }
    }
}
