//! The real `weft` binary against a real node: the CLI's commands, output and exit codes.

use std::process::Output;

use weft_host::plugins;

use crate::harness::{TestNode, guest, output_within, wait_for};

/// How long one CLI command may take (the slowest runs a map/reduce job).
const COMMAND: std::time::Duration = std::time::Duration::from_secs(120);

pub async fn weft(n: &TestNode, args: &[&str]) -> Output {
    output_within(
        COMMAND,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(args)
            .env("WEFT_NODE", &n.url)
            .env("WEFT_TOKEN", &n.token)
            .env("WEFT_DATA_DIR", n.dir.path().join("no-such-dir"))
            .env("NO_COLOR", "1"),
    )
    .await
}

pub fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

pub fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected failure, got stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_list_invoke_rollback_and_jobs() {
    let n = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    };
    let hello = write("hello.wasm", plugins::HELLO);
    let counter = write("counter.wasm", plugins::COUNTER);
    let wordcount = write("wordcount.wasm", plugins::WORDCOUNT);

    let out = ok(&weft(&n, &["deploy", &hello, "--name", "greet"]).await);
    assert!(out.contains("deployed greet v1 (http"), "{out}");
    ok(&weft(
        &n,
        &[
            "deploy",
            &counter,
            "--name",
            "greet",
            "--timeout-ms",
            "2000",
        ],
    )
    .await);
    ok(&weft(&n, &["deploy", &wordcount, "--name", "wc"]).await);

    let out = ok(&weft(&n, &["functions", "--json"]).await);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{out}");
    assert_eq!(list[0]["name"], "greet");
    assert_eq!(list[0]["version"], 2);
    assert_eq!(list[0]["limits"]["timeout_ms"], 2000);
    let out = ok(&weft(&n, &["functions"]).await);
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(out.contains("mapreduce"), "{out}");
    let greet = out.lines().find(|l| l.starts_with("greet ")).unwrap();
    assert!(greet.ends_with("timeout=2000ms"), "{out}");

    let out = ok(&weft(&n, &["invoke", "greet", "/x"]).await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!({"count": 1, "path": "/x"}), "{out}");
    let out = ok(&weft(&n, &["rollback", "greet"]).await);
    assert!(out.contains("greet now serves v1"), "{out}");
    let out = ok(&weft(&n, &["invoke", "greet", "/x"]).await);
    assert_eq!(out, "Hello, x! (from Weft)\n");
    let body = write("body.txt", b"payload");
    let out = ok(&weft(
        &n,
        &["invoke", "greet", "/y", "--data", &format!("@{body}")],
    )
    .await);
    assert_eq!(
        out, "Hello, y! (from Weft, 7 bytes)\n",
        "the file became the body"
    );

    let input = write("input.txt", b"the cat and the hat\nthe end");
    let out = ok(&weft(
        &n,
        &[
            "job",
            "run",
            "wc",
            "--input",
            &input,
            &input,
            "--reducers",
            "2",
        ],
    )
    .await);
    assert!(out.contains("succeeded"), "{out}");
    assert!(out.contains("top records:"), "{out}");
    let first_top = out
        .lines()
        .skip_while(|l| !l.starts_with("top records:"))
        .nth(1)
        .unwrap();
    assert!(
        first_top.trim_start().starts_with("the") && first_top.trim_end().ends_with('6'),
        "{out}"
    );
    let id = out.split_whitespace().nth(1).unwrap().to_string();
    let out = ok(&weft(&n, &["job", "output", &id]).await);
    let counts: std::collections::BTreeMap<String, u64> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["value"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: std::collections::BTreeMap<String, u64> =
        [("the", 6), ("cat", 2), ("and", 2), ("hat", 2), ("end", 2)]
            .map(|(k, v)| (k.to_string(), v))
            .into();
    assert_eq!(counts, expected, "{out}");
    assert_eq!(out.lines().count(), 5, "{out}");
    let out = ok(&weft(&n, &["job", "list", "--json"]).await);
    let jobs: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(jobs.as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(jobs[0]["id"], id.as_str(), "{out}");
    assert_eq!(jobs[0]["status"], "succeeded", "{out}");
    let out = ok(&weft(&n, &["members"]).await);
    let me = out.lines().nth(1).unwrap_or_default();
    assert!(
        out.starts_with("NODE") && me.starts_with("node *") && me.contains(" alive "),
        "{out}"
    );
}

#[tokio::test]
async fn cluster_init_and_issue_write_private_keys_and_refuse_mistakes() {
    let n = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c");
    let c = c.to_str().unwrap();
    let out = ok(&weft(&n, &["cluster", "init", c]).await);
    assert!(out.contains("created cluster"), "{out}");
    let err = failed(&weft(&n, &["cluster", "init", c]).await);
    assert!(err.contains("already holds a cluster CA"), "{err}");
    let out = ok(&weft(&n, &["cluster", "issue", c, "--node", "edge-1"]).await);
    assert!(out.contains("nodes/edge-1.pem"), "{out}");
    let err = failed(&weft(&n, &["cluster", "issue", c, "--node", "Bad_Name"]).await);
    assert!(err.contains("not a valid node name"), "{err}");
    #[cfg(unix)]
    for f in ["ca.key", "admin.token", "nodes/edge-1.key"] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("c").join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    // A copy without the CA key cannot issue, and says where to do it.
    let copy = dir.path().join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(dir.path().join("c/ca.pem"), copy.join("ca.pem")).unwrap();
    let err = failed(
        &weft(
            &n,
            &["cluster", "issue", copy.to_str().unwrap(), "--node", "x"],
        )
        .await,
    );
    assert!(err.contains("has no ca.key"), "{err}");
}

#[tokio::test]
async fn errors_go_to_stderr_with_a_nonzero_exit() {
    let n = TestNode::start().await;
    let err = failed(&weft(&n, &["invoke", "nobody"]).await);
    assert!(
        err.contains("404") && err.contains("no function named `nobody`"),
        "{err}"
    );
    let junk = n.dir.path().join("junk.wasm");
    std::fs::write(&junk, b"junk").unwrap();
    let err = failed(&weft(&n, &["deploy", junk.to_str().unwrap(), "--name", "j"]).await);
    assert!(
        err.contains("400") && err.contains("not a valid WebAssembly component"),
        "{err}"
    );
    let err = failed(&weft(&n, &["deploy", "/no/such/file.wasm", "--name", "j"]).await);
    assert!(err.contains("reading /no/such/file.wasm"), "{err}");
    // Without a token, a write is refused and the CLI says how to fix it.
    let out = output_within(
        COMMAND,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["deploy", junk.to_str().unwrap(), "--name", "j"])
            .env("WEFT_NODE", &n.url)
            .env_remove("WEFT_TOKEN")
            .env("WEFT_DATA_DIR", n.dir.path().join("elsewhere")),
    )
    .await;
    let err = failed(&out);
    assert!(err.contains("401") && err.contains("WEFT_TOKEN"), "{err}");
    let err = failed(&weft(&n, &["job", "run", "nobody", "--input", "/no/such/input"]).await);
    assert!(err.contains("/no/such/input"), "{err}");
    // A file of length-prefixed records that ends inside one is named before anything is
    // uploaded; an unknown kind of records is refused.
    let cut = n.dir.path().join("cut.records");
    std::fs::write(&cut, b"\x02\0\0\0ab\x05\0\0\0abc").unwrap();
    let args = ["job", "run", "nobody", "--input", cut.to_str().unwrap()];
    let err = failed(&weft(&n, &[&args[..], &["--records", "length-prefixed"]].concat()).await);
    assert!(
        err.contains("cut.records ends inside a length-prefixed record"),
        "{err}"
    );
    let err = failed(&weft(&n, &[&args[..], &["--records", "csv"]].concat()).await);
    assert!(err.contains("`csv` is not a kind of records"), "{err}");
    // The node kept serving. A function deployed with `--debug` shows its callers why it
    // failed.
    let panic = n.dir.path().join("panic.wasm");
    std::fs::write(&panic, guest("guest-panic")).unwrap();
    ok(&weft(
        &n,
        &[
            "deploy",
            panic.to_str().unwrap(),
            "--name",
            "panic",
            "--debug",
        ],
    )
    .await);
    let err = failed(&weft(&n, &["invoke", "panic"]).await);
    assert!(
        err.contains("500") && err.contains("deliberate panic"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_and_status_commands() {
    let n = TestNode::start().await;
    let out = ok(&weft(&n, &["kv", "put", "notes", "a/b c", "first"]).await);
    let v1 = out.trim().strip_prefix("version ").unwrap().to_string();
    let got = weft(&n, &["kv", "get", "notes", "a/b c"]).await;
    assert_eq!(ok(&got), "first\n");
    assert_eq!(
        String::from_utf8_lossy(&got.stderr),
        format!("version {v1}\n")
    );
    // Compare and set: right version, then the stale one fails with the current version.
    ok(&weft(
        &n,
        &["kv", "put", "notes", "a/b c", "second", "--if-version", &v1],
    )
    .await);
    let err = failed(
        &weft(
            &n,
            &["kv", "put", "notes", "a/b c", "third", "--if-version", &v1],
        )
        .await,
    );
    assert!(
        err.contains("409") && err.contains("not the one expected"),
        "{err}"
    );
    for i in 0..3 {
        ok(&weft(
            &n,
            &["kv", "put", "notes", &format!("k{i}"), &format!("v{i}")],
        )
        .await);
    }
    let out = ok(&weft(
        &n,
        &["kv", "scan", "notes", "--prefix", "k", "--limit", "2"],
    )
    .await);
    assert_eq!(out, "k0\tv0\nk1\tv1\n");
    let out = ok(&weft(&n, &["kv", "scan", "notes"]).await);
    assert_eq!(out.lines().count(), 4, "{out}");
    ok(&weft(&n, &["kv", "del", "notes", "k0"]).await);
    let err = failed(&weft(&n, &["kv", "get", "notes", "k0"]).await);
    assert!(err.contains("404") && err.contains("no key `k0`"), "{err}");
    let err = failed(&weft(&n, &["kv", "get", "Not A Namespace", "k"]).await);
    assert!(err.contains("400") && err.contains("namespace"), "{err}");
    // One node: the ring is that node, owning everything, N/R/W capped at 1.
    let out = ok(&weft(&n, &["status"]).await);
    assert!(out.contains("1 nodes on the ring"), "{out}");
    assert!(out.contains("100.0%"), "{out}");
    // A lone node forms its own group and leads it.
    assert!(
        out.contains("metadata group: this node leader, leader node, term "),
        "{out}"
    );
    assert!(out.contains("voters node; learners none"), "{out}");
    let out = ok(&weft(&n, &["status", "--json"]).await);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["keys"], 4, "{out}");
}

#[tokio::test]
async fn demo_runs_the_tour_and_exits() {
    let out = output_within(
        std::time::Duration::from_secs(300),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["demo", "--once"])
            .env_remove("WEFT_LOG"),
    )
    .await;
    let stdout = ok(&out);
    // The nodes' logs go to a file, not between the tour's lines.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("INFO"), "{stderr}");
    assert!(stdout.contains("nodes.log"), "{stdout}");
    // Three nodes, each seen alive, with their tags.
    let alive = stdout
        .lines()
        .filter(|l| l.starts_with("node-") && l.contains(" alive "))
        .count();
    assert_eq!(alive, 3, "{stdout}");
    for expected in [
        "every node sees 3 live members",
        "deployed hello",
        "deployed wordcount mapreduce",
        "GET /fn/hello/world -> Hello, world! (from Weft)",
        r#"GET /fn/counter/apples  -> {"count":3,"path":"/apples"}"#,
        "x-cache: miss",
        "x-cache: hit",
        "Succeeded",
        "top words:",
        "voters node-1, node-2, node-3",
        "alice took lock `demo` under token ",
        "bob, not waiting: 409 Conflict: lock `demo` is held by alice under token ",
        "alice released it; bob took it under token ",
        "curl http://127.0.0.1:",
        "the dashboard: http://127.0.0.1:",
        "/ui in a browser: the dashboard",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Six concurrent appends to the lock-protected ledger, each in its own place, each under
    // a grant of the key's lock.
    let appends: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("POST /fn/ledger/orders -> "))
        .map(|j| serde_json::from_str(j).unwrap())
        .collect();
    let mut places: Vec<u64> = appends
        .iter()
        .map(|a| a["index"].as_u64().unwrap())
        .collect();
    places.sort();
    assert_eq!(places, [0, 1, 2, 3, 4, 5], "{stdout}");
    assert!(
        appends.iter().all(|a| a["token"] == appends[0]["token"]),
        "{stdout}"
    );
    // "the" is the most frequent word of the bundled text.
    let top = stdout
        .lines()
        .skip_while(|l| !l.starts_with("top words:"))
        .nth(1)
        .unwrap();
    assert!(top.trim_start().starts_with("the "), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_through_the_cli_with_every_json_output_parsed() {
    let cluster = crate::cluster::new_cluster();
    let nodes = crate::cluster::start_cluster(cluster.path(), 3).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    crate::cluster::wait_converged(&all, 3).await;
    crate::replication::wait_ring(&all, 3).await;
    let n = &nodes[1];
    let json = |out: &str| -> serde_json::Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    let members = json(&ok(&weft(n, &["members", "--json"]).await));
    let mut names: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert_eq!(m["state"], "alive", "{m}");
            m["node"].as_str().unwrap()
        })
        .collect();
    names.sort();
    assert_eq!(names, ["n0", "n1", "n2"]);

    let status = json(&ok(&weft(n, &["status", "--json"]).await));
    let ring = status["nodes"].as_array().unwrap();
    assert_eq!(ring.len(), 3, "{status}");
    let shares: f64 = ring.iter().map(|r| r["share"].as_f64().unwrap()).sum();
    assert!((shares - 1.0).abs() < 1e-9, "{status}");
    assert_eq!(status["default"], "3/2/2");
    let text = ok(&weft(n, &["status"]).await);
    assert!(text.contains("3 nodes on the ring"), "{text}");

    // Key-value scans as JSON lines, one entry each, with its version.
    let mut versions = Vec::new();
    for (k, v) in [("a", "1"), ("b", "2")] {
        let out = ok(&weft(&nodes[0], &["kv", "put", "notes", k, v]).await);
        versions.push(out.trim().strip_prefix("version ").unwrap().to_string());
    }
    let out = ok(&weft(n, &["kv", "scan", "notes", "--json"]).await);
    let entries: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(entries.len(), 2, "{out}");
    for (e, (k, v, version)) in entries
        .iter()
        .zip([("a", "1", &versions[0]), ("b", "2", &versions[1])])
    {
        assert_eq!(
            (e["key"].as_str(), e["value"].as_str()),
            (Some(k), Some(v)),
            "{e}"
        );
        assert_eq!(e["version"], version.as_str(), "{e}");
    }

    // A job, its status and its output, as JSON.
    let wc = n.dir.path().join("wc.wasm");
    std::fs::write(&wc, plugins::WORDCOUNT).unwrap();
    ok(&weft(n, &["deploy", wc.to_str().unwrap(), "--name", "wc"]).await);
    let input = n.dir.path().join("input.txt");
    std::fs::write(&input, "a b a\n").unwrap();
    let job = json(&ok(&weft(
        n,
        &[
            "job",
            "run",
            "wc",
            "--input",
            input.to_str().unwrap(),
            "--json",
        ],
    )
    .await));
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output_records"], 2, "{job}");
    let id = job["id"].as_str().unwrap();
    let again = json(&ok(&weft(n, &["job", "status", id, "--json"]).await));
    assert_eq!(again["id"], id);
    assert_eq!(again["status"], "succeeded");

    // Delete: gone everywhere, and a second delete says so.
    let hello = n.dir.path().join("hello.wasm");
    std::fs::write(&hello, plugins::HELLO).unwrap();
    ok(&weft(
        &nodes[0],
        &["deploy", hello.to_str().unwrap(), "--name", "greet"],
    )
    .await);
    assert_eq!(
        ok(&weft(n, &["invoke", "greet", "/x"]).await),
        "Hello, x! (from Weft)\n"
    );
    assert_eq!(ok(&weft(n, &["delete", "greet"]).await), "deleted greet\n");
    for t in &nodes {
        let err = failed(&weft(t, &["invoke", "greet", "/x"]).await);
        assert!(
            err.contains("404") && err.contains("no function named `greet`"),
            "{err}"
        );
    }
    let err = failed(&weft(n, &["delete", "greet"]).await);
    assert!(err.contains("404"), "{err}");
}

#[tokio::test]
async fn the_token_comes_from_a_file_when_asked() {
    let n = TestNode::start().await;
    let hello = n.dir.path().join("hello.wasm");
    std::fs::write(&hello, plugins::HELLO).unwrap();
    let token_file = n.dir.path().join("token");
    let deploy = |extra: &[&str], env_file: Option<&std::path::Path>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
        cmd.args(["deploy", hello.to_str().unwrap(), "--name", "greet"])
            .args(extra)
            .env("WEFT_NODE", &n.url)
            .env_remove("WEFT_TOKEN")
            .env_remove("WEFT_TOKEN_FILE")
            .env("WEFT_DATA_DIR", n.dir.path().join("elsewhere"));
        if let Some(f) = env_file {
            cmd.env("WEFT_TOKEN_FILE", f);
        }
        cmd
    };
    let out = ok(&output_within(
        COMMAND,
        &mut deploy(&["--token-file", token_file.to_str().unwrap()], None),
    )
    .await);
    assert!(out.starts_with("deployed greet v1 "), "{out}");
    let out = ok(&output_within(COMMAND, &mut deploy(&[], Some(&token_file))).await);
    assert!(out.starts_with("deployed greet v2 "), "{out}");
    let missing = n.dir.path().join("no-such-token");
    let err = failed(
        &output_within(
            COMMAND,
            &mut deploy(&["--token-file", missing.to_str().unwrap()], None),
        )
        .await,
    );
    assert!(
        err.contains(&format!("reading the token file {}", missing.display())),
        "{err}"
    );
    // A wrong token in the file is refused by the node.
    let wrong = n.dir.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let err = failed(
        &output_within(
            COMMAND,
            &mut deploy(&["--token-file", wrong.to_str().unwrap()], None),
        )
        .await,
    );
    assert!(
        err.contains("401") && err.contains("the bearer token is wrong"),
        "{err}"
    );
}

/// `weft <command> --config FILE` with the `WEFT_*` variables `env` (and no others).
fn configured(
    command: &[&str],
    file: &std::path::Path,
    env: &[(&str, &str)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
    for (k, _) in std::env::vars() {
        if k.starts_with("WEFT_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied()).env("NO_COLOR", "1");
    cmd.args(command)
        .arg("--config")
        .arg(file)
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_come_from_the_file_then_variables_then_flags() {
    use std::time::Duration;
    use tokio::io::AsyncBufReadExt;
    use weft_host::config::NodeConfig;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("weft.toml");
    // Never the default (one per CPU), whatever the machine.
    let workers = std::thread::available_parallelism().unwrap().get() + 1;
    std::fs::write(
        &file,
        format!(
            "data_dir = {:?}\nhttp = \"127.0.0.1:1\"\nworker_threads = {workers}\n\n\
             [runtime]\nmax_instances = 17\n\n\
             [cluster]\nlisten = \"127.0.0.1:0\"\ntags = [\"from-file\"]\n\n\
             [cluster.locks]\ndefault_lease = \"30s\"\nlock_delay = \"3s\"\n\n\
             [replication]\ndefault = \"1/1/1\"\n",
            dir.path().join("data").to_str().unwrap()
        ),
    )
    .unwrap();

    // What a node would run with: the file, a variable over it, and a flag over both.
    let mut show = configured(
        &["config", "show"],
        &file,
        &[("WEFT_LOCK_LEASE", "20s"), ("WEFT_LOCK_DELAY", "4s")],
    );
    let shown = ok(&output_within(COMMAND, show.args(["--lock-delay", "5s"])).await);
    let c = NodeConfig::from_toml(&shown, std::path::Path::new("shown")).unwrap();
    assert_eq!(
        c.cluster.locks.default_lease,
        Duration::from_secs(20),
        "{shown}"
    );
    assert_eq!(
        c.cluster.locks.lock_delay,
        Duration::from_secs(5),
        "{shown}"
    );
    assert_eq!(c.replication.default.to_string(), "1/1/1", "{shown}");
    assert_eq!(c.runtime.max_instances.get(), 17, "{shown}");
    assert_eq!(c.http.to_string(), "127.0.0.1:1", "{shown}");

    // A real node from the same file: a file-only key, a variable and a flag all take effect.
    let mut node = configured(&["node"], &file, &[("WEFT_TAG", "edge,from-env")]);
    node.args(["--http", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = node.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(COMMAND, lines.next_line())
        .await
        .expect("the node starts")
        .unwrap()
        .expect("the node prints where it serves");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {line:?}"));
    // The node lists itself once its membership has started, which can be after it serves.
    let members = wait_for(COMMAND, "the node among its members", || async {
        let members: serde_json::Value = reqwest::get(format!("{url}/v1/members"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        members["members"].get(0).is_some().then_some(members)
    })
    .await;
    let me = &members["members"][0];
    assert_eq!(
        me["tags"],
        serde_json::json!(["edge", "from-env"]),
        "{members}"
    );
    assert_eq!(me["capacity"], 17, "{members}");
    let metrics = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("weft_runtime_workers {workers}")),
        "the file's worker_threads is used: {metrics}"
    );
    assert!(
        dir.path().join("data/token").exists(),
        "the file's data_dir is used"
    );
    child.kill().await.unwrap();

    // A bad file stops the node before it starts, naming the file, the line and the key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[cluster]\ntags = [\"a\"]\nlisen = \"127.0.0.1:0\"\n").unwrap();
    let err = failed(&output_within(COMMAND, &mut configured(&["node"], &bad, &[])).await);
    assert!(
        err.contains(&format!(
            "{}, line 3: `cluster.lisen`: unknown field",
            bad.display()
        )),
        "{err}"
    );

    // The documented example is what a node runs with when nothing is set.
    let example = ok(&output_within(
        COMMAND,
        tokio::process::Command::new(env!("CARGO_BIN_EXE_weft")).args(["config", "example"]),
    )
    .await);
    assert_eq!(example, weft_host::config::EXAMPLE);
}

/// Runs `cargo ARGS` in `dir` (a generated plugin), sharing one target directory between the
/// tests' plugins; the output, or a failure with it.
async fn cargo_in(dir: &std::path::Path, args: &[&str]) -> String {
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/templates");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = output_within(
        std::time::Duration::from_secs(900),
        tokio::process::Command::new(cargo)
            .args(args)
            .arg("--offline")
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS"),
    )
    .await;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "cargo {args:?} in {}:\n{text}",
        dir.display()
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_made_by_weft_new_tests_builds_deploys_and_runs() {
    let n = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk");
    for (name, kind) in [
        ("greeter", "http"),
        ("sums", "mapreduce"),
        ("accounts", "locked"),
    ] {
        let at = dir.path().join(name);
        let out = ok(&weft(
            &n,
            &[
                "new",
                name,
                "--kind",
                kind,
                "--dir",
                at.to_str().unwrap(),
                "--sdk",
                sdk.to_str().unwrap(),
            ],
        )
        .await);
        assert!(
            out.contains("created") && out.contains("cargo test"),
            "{out}"
        );
        // The versions the workspace builds with, so the test needs no network.
        std::fs::copy(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock"),
            at.join("Cargo.lock"),
        )
        .unwrap();
        let tested = cargo_in(&at, &["test"]).await;
        assert!(tested.contains("test result: ok. 2 passed"), "{tested}");
        cargo_in(&at, &["build", "--release", "--target", "wasm32-wasip2"]).await;
        let wasm = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/templates/wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        let deploy: Vec<&str> = match kind {
            "locked" => vec![
                "deploy",
                wasm.to_str().unwrap(),
                "--name",
                name,
                "--lock",
                "path:1",
            ],
            _ => vec!["deploy", wasm.to_str().unwrap(), "--name", name],
        };
        let out = ok(&weft(&n, &deploy).await);
        assert!(out.contains(&format!("deployed {name} v1")), "{out}");
    }
    let out = ok(&weft(&n, &["invoke", "greeter", "/ada"]).await);
    assert_eq!(out.trim(), r#"{"hello":"ada","visits":1}"#);
    let out = ok(&weft(&n, &["invoke", "accounts", "/ada", "-d", "50"]).await);
    assert!(out.contains(r#""balance":50"#), "{out}");
    let err = failed(&weft(&n, &["invoke", "accounts", "/ada", "-d", "-80"]).await);
    assert!(
        err.contains("409") && err.contains("the balance is 50"),
        "{err}"
    );
    let input = dir.path().join("sales.txt");
    std::fs::write(&input, "apples 5\npears 3\napples 7\n").unwrap();
    let out = ok(&weft(
        &n,
        &["job", "run", "sums", "--input", input.to_str().unwrap()],
    )
    .await);
    assert!(out.contains("apples") && out.contains("12"), "{out}");
}
