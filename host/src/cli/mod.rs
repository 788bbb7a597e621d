//! The `weft` command line: `weft node` runs a node; the other commands talk to one over HTTP.

mod allocator;
mod client;
mod demo;
mod jobs;
mod kv;
mod locks;
mod new;
mod node;
mod startup_code;
mod tokens;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use reqwest::Method;

pub use allocator::return_freed_memory_at_once;
pub use client::Client;

use crate::api::FunctionView;
use crate::membership::MemberSet;
use crate::transport::ClusterDir;

/// Weft: WebAssembly functions on your own nodes.
#[derive(Debug, Parser)]
#[command(name = "weft", version, about, long_about = None)]
pub struct Cli {
    /// The node to talk to.
    #[arg(
        long,
        global = true,
        env = "WEFT_NODE",
        default_value = "http://127.0.0.1:7070"
    )]
    node: String,
    /// The API token for write commands.
    #[arg(long, global = true, env = "WEFT_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the API token (a node writes one to <data-dir>/token).
    #[arg(long, global = true, env = "WEFT_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node. Settings come from a configuration file (`--config`), `WEFT_*` variables
    /// and flags, each overriding the one before.
    ///
    /// Example: weft node --config weft.toml --join 10.0.0.1:7946
    Node(Box<node::NodeArgs>),
    /// Write a new plugin crate from a template: an HTTP handler, a map/reduce task or a
    /// lock-protected handler, with native tests and a README.
    ///
    /// Example: weft new greeter --kind http && cd greeter && cargo test
    New {
        /// The plugin's name (also its crate's and, by default, its function's and directory's):
        /// lowercase letters, digits, `-` and `_`, starting with a letter or digit.
        name: String,
        /// What it is.
        #[arg(long, value_enum, default_value = "http")]
        kind: new::Kind,
        /// Where to write it (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The `sdk` directory of a Weft checkout (default: the one this `weft` was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Print a documented configuration file, or the configuration a node would use.
    ///
    /// Example: weft config example > weft.toml
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Create a cluster's identity, or issue node certificates.
    ///
    /// Example: weft cluster init ./prod && weft cluster issue ./prod --node edge-1
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// List the cluster's members as the node sees them.
    ///
    /// Example: weft members --json
    Members {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Upload a component and make it the current version of a function.
    ///
    /// Example: weft deploy target/wasm32-wasip2/release/counter.wasm --name counter --memory-mb 64 --config greeting=hi
    Deploy {
        /// The component (.wasm).
        file: PathBuf,
        /// The function's name.
        #[arg(long)]
        name: String,
        /// `http`, `mapreduce` or `wagi` (detected from the component's exports by default; a
        /// WASI 0.1 module with `_start` is made a `wagi` component at deploy).
        #[arg(long)]
        kind: Option<String>,
        /// Wall-clock limit per invocation, in milliseconds (node default: 10000).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Memory cap per instance, in MiB (node default: 128).
        #[arg(long)]
        memory_mb: Option<u64>,
        /// Let one instance serve up to N requests in sequence instead of one (an HTTP handler
        /// without a lock). Saves instantiating for every request, which matters for big
        /// JavaScript or Python components; what a request leaves in the instance's memory may
        /// then be seen by later requests of this function, never by another function's.
        /// Default 1: a fresh instance per request.
        #[arg(long, value_name = "N")]
        reuse: Option<u32>,
        /// Where an HTTP handler's requests run on nodes with guest processes
        /// (`guest_processes`): `process` (whatever its size; only for a handler that imports
        /// nothing of `weft:plugin` and does not reuse instances), `node`, or `auto` (the
        /// default: in a process if the component is at least `guest_process_min_bytes`).
        #[arg(long, value_name = "WHERE", value_parser = ["process", "node", "auto"])]
        run_in: Option<String>,
        /// Share this key-value namespace instead of the function's own (`fn.NAME`).
        #[arg(long)]
        kv_namespace: Option<String>,
        /// Run each request on the node owning its key: `path:N`, `header:NAME` or
        /// `query:NAME`.
        #[arg(long)]
        route_key: Option<String>,
        /// Make it a lock-protected handler: each request runs on the owner of its lock key
        /// (`path:N`, `header:NAME` or `query:NAME`), one at a time per key, under the key's
        /// lock, and its writes are fenced by the lock's token.
        #[arg(long)]
        lock: Option<String>,
        /// How long a request of a lock-protected handler may wait for its lock before it is
        /// answered 503 with Retry-After (`500ms`, `5s`, ...; default 5s).
        #[arg(long)]
        lock_wait: Option<String>,
        /// Show callers the details of the function's failures (trap, backtrace, stderr)
        /// instead of a short message and an error id to look up in the node's log.
        #[arg(long)]
        debug: bool,
        /// A configuration value the component reads through `wasi:config/store`, `KEY=VALUE`;
        /// repeatable. Kept with this version of the function (a rollback brings back the
        /// previous version's).
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config_pair)]
        config: Vec<(String, String)>,
    },
    /// List functions: name, kind, version, size, digest, and what each was deployed with
    /// beyond the defaults (`timeout=`, `memory=`, `reuse=`, `route=`, `lock=`, `wait=`, `debug`).
    ///
    /// Example: weft functions
    Functions {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make the previous version of a function current again.
    ///
    /// Example: weft rollback counter
    Rollback {
        /// The function's name.
        name: String,
    },
    /// Remove a function (its modules and data stay).
    ///
    /// Example: weft delete counter
    Delete {
        /// The function's name.
        name: String,
    },
    /// Call an HTTP function and print its answer.
    ///
    /// Example: weft invoke counter /apples -X POST -d @order.json -H 'content-type: application/json'
    Invoke {
        /// The function's name.
        name: String,
        /// The path below the function, e.g. `/users/7`.
        #[arg(default_value = "/")]
        path: String,
        /// Request body: text, or @FILE to send a file.
        #[arg(long, short = 'd', allow_hyphen_values = true)]
        data: Option<String>,
        /// HTTP method (default GET, or POST with --data).
        #[arg(long, short = 'X')]
        method: Option<String>,
        /// Extra header, `Name: value` (repeatable).
        #[arg(long, short = 'H')]
        header: Vec<String>,
    },
    /// Map/reduce jobs.
    ///
    /// Example: weft job run wordcount --input README.md
    Job {
        #[command(subcommand)]
        command: jobs::JobCommand,
    },
    /// Take, renew or release a lock (leases with fencing tokens).
    ///
    /// Example: weft lock acquire deploys --lease 30s
    Lock {
        #[command(subcommand)]
        command: locks::LockCommand,
    },
    /// List the held locks: holder, token, lease left, waiters.
    ///
    /// Example: weft locks
    Locks {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Scoped API tokens: create (read, invoke, deploy or admin; optionally one key-value
    /// namespace and an expiry), list, revoke.
    ///
    /// Example: weft token create --scope invoke --namespace fn.counter --expires 30d
    Token {
        #[command(subcommand)]
        command: tokens::TokenCommand,
    },
    /// The replicated key-value store.
    ///
    /// Example: weft kv put users alice '{"plan":"pro"}'
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Show the ring: each node's share, replication health and anti-entropy.
    ///
    /// Example: weft status --json
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Start a local three-node cluster, deploy the bundled plugins and tour them: invocations,
    /// a read-through cache, a lock-protected handler, a map/reduce job, locks.
    ///
    /// Example: weft demo --once
    Demo {
        /// Exit after the tour instead of serving until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Print the nodes' logs here too, instead of only to `nodes.log` in the demo's
        /// directory.
        #[arg(long)]
        verbose: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print a configuration file holding every key at its default, with what each means
    /// and the flag and variable that override it.
    ///
    /// Example: weft config example > weft.toml
    Example,
    /// Print the configuration `weft node` would run with the same file, variables and flags.
    ///
    /// Example: weft config show --config weft.toml --http 0.0.0.0:7070
    Show(Box<node::NodeArgs>),
}

#[derive(Debug, Subcommand)]
enum ClusterCommand {
    /// Create a cluster: its CA and admin token, in a new directory.
    ///
    /// Example: weft cluster init ./prod
    Init {
        /// The cluster directory to create.
        dir: PathBuf,
    },
    /// Issue a certificate for a node (needs the CA key in DIR), or renew it: a running node
    /// takes the new files up without a restart (within two `certificate_check_interval`s).
    ///
    /// Example: weft cluster issue ./prod --node edge-1
    Issue {
        /// The cluster directory.
        dir: PathBuf,
        /// The node's name.
        #[arg(long)]
        node: String,
    },
    /// Deny a node: every node refuses its connections (its certificate no longer lets it in),
    /// until it is allowed again. Ask any other node (`WEFT_NODE`; needs an admin token).
    ///
    /// Example: weft cluster deny edge-3 --reason "decommissioned"
    Deny {
        /// The node's name.
        #[arg(value_name = "NODE")]
        name: String,
        /// Why, kept with the entry.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Take a node off the deny list.
    ///
    /// Example: weft cluster allow edge-3
    Allow {
        /// The node's name.
        #[arg(value_name = "NODE")]
        name: String,
    },
    /// List the denied nodes.
    ///
    /// Example: weft cluster denied
    Denied {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs the command line; errors go to stderr with a non-zero exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Node(_) | Command::Demo { verbose: true, .. } => {
            init_tracing("info", None);
        }
        // The demo logs to a file in its directory, once it has one.
        Command::Demo { verbose: false, .. } => {}
        _ => init_tracing("warn", None),
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // A node's settings say how many threads its runtime has. A file that does not read is
    // reported when the node starts, below.
    if let Command::Node(args) = &cli.command
        && let Some(n) = args.config().ok().and_then(|c| c.worker_threads)
    {
        builder.worker_threads(n.get());
    }
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, or to `file`, at `default` level unless `WEFT_LOG` says otherwise.
fn init_tracing(default: &str, file: Option<std::fs::File>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{default},cranelift=warn,wasmtime=warn"))
    });
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = match file {
        Some(f) => logs
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => logs.with_writer(std::io::stderr).try_init(),
    };
}

/// `$WEFT_DATA_DIR`, else the configuration's default (`~/.local/share/weft`).
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("WEFT_DATA_DIR").map_or_else(crate::config::default_data_dir, PathBuf::from)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = || -> anyhow::Result<Client> {
        Client::new(
            &cli.node,
            client::resolve_token(cli.token.clone(), cli.token_file.clone())?,
        )
    };
    match &cli.command {
        Command::Node(args) => node::run(args).await,
        Command::New {
            name,
            kind,
            dir,
            sdk,
        } => new::run(name, *kind, dir.as_deref(), sdk.as_deref()),
        Command::Config { command } => match command {
            ConfigCommand::Example => {
                print!("{}", crate::config::EXAMPLE);
                Ok(())
            }
            ConfigCommand::Show(args) => node::show(args),
        },
        Command::Deploy {
            file,
            name,
            kind,
            timeout_ms,
            memory_mb,
            reuse,
            run_in,
            kv_namespace,
            route_key,
            lock,
            lock_wait,
            debug,
            config,
        } => {
            let bytes =
                std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let c = client()?;
            let mut query = vec![];
            if let Some(k) = kind {
                query.push(("kind", k.clone()));
            }
            if let Some(t) = timeout_ms {
                query.push(("timeout_ms", t.to_string()));
            }
            if let Some(m) = memory_mb {
                query.push(("memory_mb", m.to_string()));
            }
            if let Some(n) = reuse {
                query.push(("reuse", n.to_string()));
            }
            if let Some(w) = run_in {
                query.push(("run_in", w.clone()));
            }
            if let Some(ns) = kv_namespace {
                query.push(("kv_namespace", ns.clone()));
            }
            if let Some(k) = route_key {
                query.push(("route_key", k.clone()));
            }
            if let Some(k) = lock {
                query.push(("lock", k.clone()));
            }
            if let Some(w) = lock_wait {
                query.push(("lock_wait", w.clone()));
            }
            if *debug {
                query.push(("debug", "true".into()));
            }
            if !config.is_empty() {
                let map: std::collections::BTreeMap<&str, &str> = config
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                query.push(("config", serde_json::to_string(&map)?));
            }
            let f: FunctionView = c
                .json(
                    c.request(Method::PUT, &format!("/v1/functions/{name}"))
                        .query(&query)
                        .body(bytes),
                )
                .await?;
            println!(
                "deployed {} v{} ({}, {} bytes) digest {}",
                f.name, f.version, f.kind, f.size, f.digest
            );
            Ok(())
        }
        Command::Functions { json } => {
            let c = client()?;
            let fs: Vec<FunctionView> = c.json(c.request(Method::GET, "/v1/functions")).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&fs)?);
            } else {
                println!(
                    "{:<24} {:<10} {:>8} {:>9}  {:<12}  OPTIONS",
                    "NAME", "KIND", "VERSION", "SIZE", "DIGEST"
                );
                for f in fs {
                    println!(
                        "{:<24} {:<10} {:>8} {:>9}  {:<12}  {}",
                        f.name,
                        f.kind.to_string(),
                        format!("{}/{}", f.version, f.versions),
                        f.size,
                        f.digest.short(),
                        options_of(&f)
                    );
                }
            }
            Ok(())
        }
        Command::Rollback { name } => {
            let c = client()?;
            let f: FunctionView = c
                .json(c.request(Method::POST, &format!("/v1/functions/{name}/rollback")))
                .await?;
            println!("{} now serves v{} (digest {})", f.name, f.version, f.digest);
            Ok(())
        }
        Command::Delete { name } => {
            let c = client()?;
            c.send(c.request(Method::DELETE, &format!("/v1/functions/{name}")))
                .await?;
            println!("deleted {name}");
            Ok(())
        }
        Command::Invoke {
            name,
            path,
            data,
            method,
            header,
        } => {
            let c = client()?;
            let body = match data.as_deref() {
                Some(d) if d.starts_with('@') => {
                    Some(std::fs::read(&d[1..]).with_context(|| format!("reading {}", &d[1..]))?)
                }
                Some(d) => Some(d.as_bytes().to_vec()),
                None => None,
            };
            let method = match method {
                Some(m) => m
                    .to_uppercase()
                    .parse::<Method>()
                    .with_context(|| format!("`{m}` is not an HTTP method"))?,
                None if body.is_some() => Method::POST,
                None => Method::GET,
            };
            let path = format!("/fn/{name}/{}", path.trim_start_matches('/'));
            let mut req = c.request(method, &path);
            for h in header {
                let (k, v) = h
                    .split_once(':')
                    .with_context(|| format!("header `{h}` is not `Name: value`"))?;
                req = req.header(k.trim(), v.trim());
            }
            if let Some(b) = body {
                req = req.body(b);
            }
            let resp = c.send(req).await?;
            let bytes = resp.bytes().await.context("reading the answer")?;
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
            if !bytes.ends_with(b"\n") {
                println!();
            }
            Ok(())
        }
        Command::Job { command } => jobs::run(&client()?, command).await,
        Command::Cluster {
            command:
                command @ (ClusterCommand::Deny { .. }
                | ClusterCommand::Allow { .. }
                | ClusterCommand::Denied { .. }),
        } => tokens::deny_list(&client()?, command).await,
        Command::Cluster { command } => cluster(command),
        Command::Members { json } => {
            let c = client()?;
            let set: MemberSet = c.json(c.request(Method::GET, "/v1/members")).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&set)?);
            } else {
                print!("{}", members_table(&set));
            }
            Ok(())
        }
        Command::Kv { command } => kv::run(&client()?, command).await,
        Command::Lock { command } => locks::run(&client()?, command).await,
        Command::Locks { json } => locks::list(&client()?, *json).await,
        Command::Token { command } => tokens::run(&client()?, command).await,
        Command::Status { json } => kv::status(&client()?, *json).await,
        Command::Demo { once, verbose } => demo::run(*once, *verbose).await,
    }
}

/// `KEY=VALUE`.
fn parse_config_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn cluster(command: &ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Init { dir } => {
            let id = ClusterDir::new(dir).init()?;
            println!("created cluster {id} in {}", dir.display());
            println!("  ca.pem       the CA certificate (every node needs it)");
            println!("  ca.key       the CA key: keep it private; it issues node certificates");
            println!("  admin.token  the API token every node of this cluster accepts");
            println!("next: weft cluster issue {} --node NAME", dir.display());
            Ok(())
        }
        ClusterCommand::Deny { .. }
        | ClusterCommand::Allow { .. }
        | ClusterCommand::Denied { .. } => {
            unreachable!("answered over HTTP by `run`")
        }
        ClusterCommand::Issue { dir, node } => {
            let name: crate::id::NodeId = node.parse()?;
            let path = ClusterDir::new(dir).issue(&name)?;
            println!("issued {} for node `{name}`", path.display());
            println!(
                "a node already running as `{name}` on these files takes the new certificate up without a restart"
            );
            println!(
                "start it with: weft node --cluster {} --name {name} --listen ADDR [--join PEER]",
                dir.display()
            );
            Ok(())
        }
    }
}

/// What a function was deployed with beyond the defaults, as `weft deploy` spells it:
/// `timeout=2000ms memory=64MiB reuse=100 run-in=process route=path:1 lock=header:x wait=20000ms debug`.
fn options_of(f: &FunctionView) -> String {
    let mut out = Vec::new();
    if let Some(ms) = f.limits.timeout_ms {
        out.push(format!("timeout={ms}ms"));
    }
    if let Some(bytes) = f.limits.memory_bytes {
        out.push(format!("memory={}MiB", bytes >> 20));
    }
    if let Some(n) = f.limits.reuse {
        out.push(format!("reuse={n}"));
    }
    if let Some(w) = f.limits.run_in {
        out.push(format!("run-in={w}"));
    }
    if let Some(key) = &f.route_key {
        out.push(format!("route={key}"));
    }
    if let Some(key) = &f.lock {
        out.push(format!("lock={key}"));
    }
    if let Some(ms) = f.lock_wait_ms {
        out.push(format!("wait={ms}ms"));
    }
    if f.debug {
        out.push("debug".into());
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(" ")
    }
}

/// The member set as a table.
pub fn members_table(set: &MemberSet) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let _ = writeln!(
        out,
        "{:<16} {:<8} {:<22} {:<22} {:>5} {:>8} {:>9}  {:<10} CHANGED",
        "NODE", "STATE", "CLUSTER ADDR", "HTTP", "INC", "RTT", "FREE", "TAGS"
    );
    for m in &set.members {
        let state = format!("{:?}", m.state).to_lowercase();
        let _ = writeln!(
            out,
            "{:<16} {:<8} {:<22} {:<22} {:>5} {:>8} {:>9}  {:<10} {}s ago",
            if m.is_self {
                format!("{} *", m.node)
            } else {
                m.node.to_string()
            },
            state,
            m.addr.to_string(),
            m.http.map(|a| a.to_string()).unwrap_or_default(),
            m.incarnation,
            m.rtt_ms
                .map(|r| format!("{r:.2}ms"))
                .unwrap_or_else(|| "-".into()),
            format!(
                "{}/{}",
                m.free.map_or_else(|| "?".to_string(), |f| f.to_string()),
                m.capacity
            ),
            m.tags.join(","),
            now.saturating_sub(m.since_ms) / 1000
        );
    }
    out
}

/// Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn a_functions_options_are_listed_as_deploy_spells_them() {
        let view = |json: serde_json::Value| -> super::FunctionView {
            let mut base = serde_json::json!({
                "name": "f", "digest": "0".repeat(64), "kind": "http", "size": 1,
                "version": 1, "versions": 1, "limits": {}, "deployed_at_ms": 0
            });
            base.as_object_mut()
                .unwrap()
                .extend(json.as_object().unwrap().clone());
            serde_json::from_value(base).unwrap()
        };
        for (given, expected) in [
            (serde_json::json!({}), "-"),
            (
                serde_json::json!({"limits": {"timeout_ms": 2000, "memory_bytes": 67108864}}),
                "timeout=2000ms memory=64MiB",
            ),
            (serde_json::json!({"limits": {"reuse": 100}}), "reuse=100"),
            (
                serde_json::json!({"limits": {"run_in": "process"}}),
                "run-in=process",
            ),
            (
                serde_json::json!({"lock": "path:1", "lock_wait_ms": 20000, "debug": true}),
                "lock=path:1 wait=20000ms debug",
            ),
            (
                serde_json::json!({"route_key": "header:x"}),
                "route=header:x",
            ),
        ] {
            assert_eq!(super::options_of(&view(given.clone())), expected, "{given}");
        }
    }

    /// Every command's path, depth first.
    fn commands(c: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
        for sub in c.get_subcommands() {
            let p = format!("{path} {}", sub.get_name()).trim().to_owned();
            let help = sub
                .get_long_about()
                .or(sub.get_about())
                .map(|s| s.to_string())
                .unwrap_or_default();
            out.push((p.clone(), help));
            commands(sub, &p, out);
        }
    }

    #[test]
    fn every_command_says_what_it_does_with_an_example() {
        let mut all = vec![];
        commands(&super::Cli::command(), "", &mut all);
        let missing: Vec<&str> = all
            .iter()
            .filter(|(_, help)| !help.contains("Example: weft "))
            .map(|(p, _)| p.as_str())
            .filter(|p| *p != "help" && !p.ends_with(" help"))
            .collect();
        assert!(missing.is_empty(), "no example in the help of: {missing:?}");
    }

    #[test]
    fn the_readme_tours_every_command() {
        let readme = include_str!("../../../README.md");
        let mut all = vec![];
        commands(&super::Cli::command(), "", &mut all);
        let missing: Vec<&str> = all
            .iter()
            .map(|(p, _)| p.as_str())
            .filter(|p| *p != "help" && !p.ends_with(" help"))
            .filter(|p| !readme.contains(&format!("weft {p}")))
            .collect();
        assert!(missing.is_empty(), "the README never shows: {missing:?}");
    }
}
