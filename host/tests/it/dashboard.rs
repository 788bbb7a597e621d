//! The dashboard in a real headless Chromium, driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): every page shows what the API says, a rollback clicked in the page
//! changes the serving version, a running job's progress moves on the page without a reload,
//! a job cancelled and a key deleted in the page are so in the API, and actions need the
//! token. Each page is saved as a screenshot (in `target/screenshots`, or where
//! `WEFT_SCREENSHOTS` says; `host/docs/screenshots` holds the README's).
//!
//! Without Chromium the test prints why and passes, unless `WEFT_REQUIRE_BROWSER=1` (set by
//! `.ci/run`, which installs it) makes that a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::{Method, StatusCode};

use crate::harness::{TestNode, guest, json_of, wait_for};
use crate::replication::ring_with;

/// How long a page may take to show what is waited for.
const PAGE: Duration = Duration::from_secs(30);

/// A headless Chromium behind its WebDriver server.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    shots: PathBuf,
}

fn on_path(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// Installs Debian's Chromium and its WebDriver, where this runs as root with apt-get (as on a
/// fresh CI machine or container).
fn install() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not running as root".into());
    }
    if on_path(&["apt-get"]).is_none() {
        return Err("no apt-get".into());
    }
    eprintln!(
        "installing chromium and chromium-driver with apt-get for the dashboard's browser test"
    );
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| e.to_string())
            .and_then(|s| {
                s.success()
                    .then_some(())
                    .ok_or(format!("apt-get {args:?}: {s}"))
            })
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "chromium", "chromium-driver"])
}

impl Browser {
    /// A browser, or `None` (with the reason printed) where Chromium is not installed.
    async fn start() -> Option<Browser> {
        let found = || {
            let chromium = on_path(&["chromium", "chromium-browser", "google-chrome"]);
            chromium.zip(on_path(&["chromedriver"]))
        };
        let installed = match found() {
            Some(both) => Ok(both),
            None => install().and_then(|()| found().ok_or("still not on PATH".into())),
        };
        let (chromium, driver) = match installed {
            Ok(both) => both,
            Err(why) => {
                let why = format!(
                    "no `chromium` and `chromedriver` on PATH, and they could not be installed ({why}); \
                     on Debian: apt-get install chromium chromium-driver (.ci/run does)"
                );
                assert!(
                    std::env::var_os("WEFT_REQUIRE_BROWSER").is_none(),
                    "WEFT_REQUIRE_BROWSER is set but there is {why}"
                );
                eprintln!("SKIPPED the dashboard's browser test: {why}");
                return None;
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = {
            use std::os::unix::process::CommandExt;
            Command::new(driver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so the browser goes with it whatever happens.
                .process_group(0)
                .spawn()
                .expect("chromedriver starts")
        };
        let profile = tempfile::tempdir().unwrap();
        let args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1440,1000",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let client = wait_for(
            Duration::from_secs(60),
            "chromedriver to start a session",
            || {
                let caps = caps.clone();
                let url = url.clone();
                async move {
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(caps)
                        .connect(&url)
                        .await
                        .ok()
                }
            },
        )
        .await;
        let shots = match std::env::var_os("WEFT_SCREENSHOTS") {
            Some(dir) => Path::new(env!("CARGO_MANIFEST_DIR")).join(dir),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots"),
        };
        std::fs::create_dir_all(&shots).unwrap();
        Some(Browser {
            client,
            driver,
            _profile: profile,
            shots,
        })
    }

    /// Opens `url` and waits until the page's live updates are connected.
    async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
        self.live().await;
    }

    /// Waits until the page's script has had its first live update.
    async fn live(&self) {
        wait_for(PAGE, "the page's live updates", || async {
            let on = self.client.find(Locator::Css("body[data-live=on]")).await;
            on.ok()
        })
        .await;
    }

    /// The text of the first element `css` selects, once there is one.
    async fn text(&self, css: &str) -> String {
        wait_for(PAGE, &format!("`{css}` on the page"), || async {
            let e = self.client.find(Locator::Css(css)).await.ok()?;
            e.text().await.ok()
        })
        .await
    }

    /// Waits until the text at `css` is `expected`.
    async fn text_is(&self, css: &str, expected: &str) {
        let what = format!("`{css}` to read {expected:?}");
        wait_for(PAGE, &what, || async {
            let e = self.client.find(Locator::Css(css)).await.ok()?;
            (e.text().await.ok()? == expected).then_some(())
        })
        .await
    }

    /// Waits until nothing matches `css`.
    async fn gone(&self, css: &str) {
        wait_for(PAGE, &format!("`{css}` to leave the page"), || async {
            let all = self.client.find_all(Locator::Css(css)).await.ok()?;
            all.is_empty().then_some(())
        })
        .await
    }

    /// Clicks the first element `css` selects (again if a live update replaced it first).
    async fn click(&self, css: &str) {
        let last = std::sync::Mutex::new(String::new());
        let clicked = tokio::time::timeout(
            PAGE,
            wait_for(PAGE * 2, "a click", || async {
                let tried = async {
                    let e = self.client.find(Locator::Css(css)).await?;
                    e.click().await
                };
                tried
                    .await
                    .map_err(|e| *last.lock().unwrap() = e.to_string())
                    .ok()
            }),
        )
        .await;
        assert!(
            clicked.is_ok(),
            "could not click `{css}`: {}",
            last.lock().unwrap()
        );
    }

    async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_string()
    }

    /// Saves the page as `NAME.png`.
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    async fn close(mut self) {
        self.client.clone().close().await.unwrap();
        self.stop();
    }

    fn stop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-9", "--", &group]).status();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.driver.try_wait() {
            self.stop();
        }
    }
}

async fn api(n: &TestNode, path: &str) -> serde_json::Value {
    let (status, v) = json_of(n.req(Method::GET, path).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{path}: {v}");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_and_acts_on_it_in_a_real_browser() {
    let Some(b) = Browser::start().await else {
        return;
    };
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let n = &nodes[0];

    // Something for every page: a function with two versions, keys, a lock, a running job.
    n.deploy_ok("greeter", guest("hello"), &[]).await;
    n.deploy_ok("greeter", guest("cache"), &[]).await;
    for (key, value) in [("shown", "in the browser <b>escaped</b>"), ("doomed", "x")] {
        let r = n
            .req(Method::PUT, &format!("/v1/kv/fn.greeter/{key}"))
            .body(value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let (status, lock) = json_of(
        n.req(Method::POST, "/v1/locks/dash-lock")
            .query(&[("lease", "120s"), ("holder", "dashboard-test")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{lock}");
    n.deploy_ok("spinner", guest("guest-mapfaults"), &[]).await;

    // Cluster: every member, in the state and with the capacity the API gives.
    b.open(&format!("{}/ui/cluster", n.url)).await;
    let members = api(n, "/v1/members").await;
    let members = members["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        let row = format!("tr[data-node=\"{}\"]", m["node"].as_str().unwrap());
        b.text_is(&format!("{row} td.state"), m["state"].as_str().unwrap())
            .await;
        b.text_is(&format!("{row} td.capacity"), &m["capacity"].to_string())
            .await;
    }
    b.shot("cluster").await;

    // Ring: replication settings and every node's share.
    b.open(&format!("{}/ui/ring", n.url)).await;
    let status = api(n, "/v1/status").await;
    b.text_is("#nrw", status["default"].as_str().unwrap()).await;
    b.text_is("#vnodes", &status["vnodes"].to_string()).await;
    for node in status["nodes"].as_array().unwrap() {
        let share = format!("{:.1}%", node["share"].as_f64().unwrap() * 100.0);
        let css = format!(
            "tr[data-node=\"{}\"] td.share",
            node["node"].as_str().unwrap()
        );
        b.text_is(&css, &share).await;
    }
    b.shot("ring").await;

    // Consensus: the leader, the term, every voter.
    b.open(&format!("{}/ui/consensus", n.url)).await;
    let group = &api(n, "/v1/status").await["consensus"];
    b.text_is("#leader", group["leader"].as_str().unwrap())
        .await;
    b.text_is("#term", &group["term"].to_string()).await;
    for v in group["voters"].as_array().unwrap() {
        b.text(&format!(
            "#voters tr[data-node=\"{}\"]",
            v["name"].as_str().unwrap()
        ))
        .await;
    }
    b.shot("consensus").await;

    // Functions: the serving version; a rollback needs the token, then changes it.
    b.open(&format!("{}/ui/functions", n.url)).await;
    let greeter = &api(n, "/v1/functions/greeter").await;
    assert_eq!(greeter["current"], 1, "{greeter}");
    b.text_is("tr[data-function=greeter] td.version", "2 of 2")
        .await;
    b.shot("functions").await;
    b.click("tr[data-function=greeter] button.rollback").await;
    wait_for(PAGE, "the sign-in page", || async {
        (b.path().await == "/ui/login").then_some(())
    })
    .await;
    assert_eq!(
        api(n, "/v1/functions/greeter").await["current"],
        1,
        "a click without the token changed nothing"
    );
    b.shot("login").await;
    let field = b.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys("not-the-token").await.unwrap();
    b.click("#sign-in").await;
    b.text("#notice.failed").await;
    let field = b.client.find(Locator::Id("token")).await.unwrap();
    field.send_keys(&n.token).await.unwrap();
    b.click("#sign-in").await;
    wait_for(PAGE, "the functions page again", || async {
        (b.path().await == "/ui/functions").then_some(())
    })
    .await;
    b.live().await;
    b.click("tr[data-function=greeter] button.rollback").await;
    b.text("#notice.done").await;
    b.text_is("tr[data-function=greeter] td.version", "1 of 2")
        .await;
    assert_eq!(api(n, "/v1/functions/greeter").await["current"], 0);
    let (status, body) = n.get("/fn/greeter").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Hello from Weft!\n"),
        "the first version (hello) serves again"
    );
    b.open(&format!("{}/ui/functions/greeter", n.url)).await;
    b.text_is("#version", "1").await;
    assert_eq!(
        b.client
            .find_all(Locator::Css("#history tbody tr"))
            .await
            .unwrap()
            .len(),
        2
    );
    b.shot("function").await;

    // Jobs: the running job's map progress moves on the page while it stays loaded.
    // One slow record (about half a second of work) per map task: records of the smallest
    // chunk size, 64 KiB.
    let input: String = (0..60)
        .map(|i| format!("spin{i:02}{}\n", "x".repeat((64 << 10) - 7)))
        .collect();
    let (status, job) = json_of(
        n.req(Method::POST, "/v1/jobs")
            .query(&[
                ("function", "spinner"),
                ("chunk_size", "65536"),
                ("reducers", "2"),
            ])
            .body(input)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{}", job["error"]);
    let job_id = job["id"].as_str().unwrap().to_string();
    b.open(&format!("{}/ui/jobs", n.url)).await;
    let section = format!("section[data-job=\"{job_id}\"]");
    let total = api(n, &format!("/v1/jobs/{job_id}")).await["progress"]["maps_total"].clone();
    assert_eq!(total, 60, "one map task per record");
    b.text_is(&format!("{section} .maps-total"), "60").await;
    let job = api(n, &format!("/v1/jobs/{job_id}")).await;
    assert_eq!(job["status"], "running", "{}", job["progress"]);
    let first: u64 = b
        .text(&format!("{section} .maps-done"))
        .await
        .parse()
        .unwrap();
    let url_before = b.client.current_url().await.unwrap();
    wait_for(PAGE, "the job's progress to move on the page", || async {
        let e = b
            .client
            .find(Locator::Css(&format!("{section} .maps-done")))
            .await
            .ok()?;
        let now: u64 = e.text().await.ok()?.parse().ok()?;
        (now > first).then_some(())
    })
    .await;
    assert_eq!(
        b.client.current_url().await.unwrap(),
        url_before,
        "no reload"
    );
    b.shot("jobs").await;
    // Cancelled from the page; the API agrees, and the page shows it.
    b.click(&format!("{section} button.cancel")).await;
    b.text(&format!("{section}[data-status=cancelled]")).await;
    wait_for(PAGE, "the job to end cancelled in the API", || async {
        let job = api(n, &format!("/v1/jobs/{job_id}")).await;
        (job["status"] == "cancelled").then_some(())
    })
    .await;

    // Locks: holder and token as granted.
    b.open(&format!("{}/ui/locks", n.url)).await;
    let row = "tr[data-lock=\"dash-lock\"]";
    b.text_is(&format!("{row} td.holder"), "dashboard-test")
        .await;
    b.text_is(&format!("{row} td.token"), &lock["token"].to_string())
        .await;
    b.shot("locks").await;

    // Key-value: values shown as text (markup escaped); a key deleted from the page is gone.
    b.open(&format!("{}/ui/kv?ns=fn.greeter", n.url)).await;
    b.text_is(
        "tr[data-key=shown] td.value",
        "in the browser <b>escaped</b>",
    )
    .await;
    b.shot("kv").await;
    b.click("tr[data-key=doomed] button.delete").await;
    b.text("#notice.done").await;
    b.gone("tr[data-key=doomed]").await;
    let (status, _) = n.get("/v1/kv/fn.greeter/doomed").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    b.text("tr[data-key=shown]").await;

    // Signed out, the private pages ask for the token again.
    b.click("header form.session button").await;
    wait_for(PAGE, "the cluster page after signing out", || async {
        (b.path().await == "/ui/cluster").then_some(())
    })
    .await;
    b.client.goto(&format!("{}/ui/locks", n.url)).await.unwrap();
    assert_eq!(b.path().await, "/ui/login");
    b.close().await;
}

/// Over plain HTTP: private pages and actions need the session; the session is not the token;
/// a bad page is a clear 404; assets are served from the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_guards_private_pages_and_actions() {
    let n = TestNode::start().await;
    n.deploy_ok("greeter", guest("hello"), &[]).await;
    n.deploy_ok("greeter", guest("hello"), &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| http.get(format!("{}{path}", n.url)).send();
    for page in [
        "/ui/cluster",
        "/ui/ring",
        "/ui/consensus",
        "/ui/functions",
        "/ui/functions/greeter",
    ] {
        let r = get(page).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{page}");
        let csp = r.headers()["content-security-policy"].to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
    }
    for page in ["/ui/jobs", "/ui/locks", "/ui/kv?ns=fn.greeter"] {
        let r = get(page).await.unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{page}");
        assert!(
            r.headers()["location"]
                .to_str()
                .unwrap()
                .starts_with("/ui/login?next=")
        );
        let live = page.replace("/ui/", "/ui/live/");
        assert_eq!(
            get(&live).await.unwrap().status(),
            StatusCode::UNAUTHORIZED,
            "{live}"
        );
    }
    // An action without the session does nothing.
    let rollback = format!("{}/ui/functions/greeter/rollback", n.url);
    let r = http
        .post(&rollback)
        .form(&[("back", "/ui/functions")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (_, f) = n.json(n.req(Method::GET, "/v1/functions/greeter")).await;
    assert_eq!(f["current"], 1);
    // A wrong token is refused; the right one gives a cookie that is not the token.
    let login = format!("{}/ui/login", n.url);
    let r = http
        .post(&login)
        .form(&[("token", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("set-cookie").is_none());
    let r = http
        .post(&login)
        .form(&[
            ("token", n.token.as_str()),
            ("next", "https://elsewhere.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        r.headers()["location"],
        "/ui/cluster",
        "no redirect elsewhere"
    );
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(&n.token),
        "the cookie never holds the token"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let r = http
        .get(format!("{}/ui/jobs", n.url))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = http
        .post(&rollback)
        .header("cookie", &session)
        .form(&[("back", "/ui/functions")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["location"].to_str().unwrap().contains("note="));
    let (_, f) = n.json(n.req(Method::GET, "/v1/functions/greeter")).await;
    assert_eq!(f["current"], 0, "rolled back with the session");
    // Rolling back past the first version is refused, and the page says why.
    let r = http
        .post(&rollback)
        .header("cookie", &session)
        .form(&[("back", "/ui/functions")])
        .send()
        .await
        .unwrap();
    assert!(r.headers()["location"].to_str().unwrap().contains("error="));
    // Unknown pages and assets are clear 404s; the assets come from the binary.
    let r = get("/ui/nothing").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert!(r.text().await.unwrap().contains("no dashboard page"));
    assert_eq!(
        get("/ui/assets/x.js").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let js = get("/ui/assets/ui.js").await.unwrap();
    assert_eq!(
        js.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(js.text().await.unwrap().contains("EventSource"));
    // A live page's stream ends cleanly when the node stops (it does not hold the shutdown up
    // until the server gives up and cuts it).
    let mut live = get("/ui/live/cluster").await.unwrap();
    assert_eq!(live.headers()["content-type"], "text/event-stream");
    let first = live.chunk().await.unwrap().unwrap();
    assert!(first.starts_with(b"data: \""), "{first:?}");
    let rest = tokio::spawn(async move {
        let mut rest = Vec::new();
        while let Some(chunk) = live.chunk().await? {
            rest.extend_from_slice(&chunk);
        }
        Ok::<_, reqwest::Error>(rest)
    });
    n.stop().await;
    // (Without its end, the stream outlived the node: the server's connections run on.)
    let rest = tokio::time::timeout(Duration::from_secs(60), rest)
        .await
        .expect("the live stream ends when the node stops")
        .unwrap();
    assert!(rest.is_ok(), "the stream was cut: {rest:?}");
}
