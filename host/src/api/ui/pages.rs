//! The dashboard's pages: what each shows, rendered from the same values the JSON API
//! returns.

use maud::{DOCTYPE, Markup, html};

use super::super::{ApiError, App};
use crate::api::percent_encode;
use crate::functions::Consistency;
use crate::id::{FunctionName, Namespace};
use crate::mapreduce::{JobRecord, JobStatus};
use crate::membership::MemberState;

/// The pages, in the order of the menu.
const MENU: &[(&str, &str)] = &[
    ("cluster", "Cluster"),
    ("ring", "Ring"),
    ("consensus", "Consensus"),
    ("functions", "Functions"),
    ("jobs", "Jobs"),
    ("locks", "Locks"),
    ("kv", "Key-value"),
];

/// Keys the key-value browser shows at once.
const KV_PAGE: usize = 50;

/// Characters of a value the key-value browser shows before cutting it short.
const VALUE_SHOWN: usize = 200;

/// The key-value browser's choice.
#[derive(Clone, Debug, Default)]
pub(super) struct KvQuery {
    pub(super) ns: String,
    pub(super) prefix: String,
    pub(super) start: String,
}

/// One page of the dashboard.
#[derive(Clone, Debug)]
pub(super) enum View {
    Cluster,
    Ring,
    Consensus,
    Functions,
    Function(FunctionName),
    Jobs,
    Locks,
    Kv(KvQuery),
}

impl View {
    /// The page at `/ui/{path}`.
    pub(super) fn parse(path: &str, kv: KvQuery) -> Option<View> {
        Some(match path {
            "cluster" => View::Cluster,
            "ring" => View::Ring,
            "consensus" => View::Consensus,
            "functions" => View::Functions,
            "jobs" => View::Jobs,
            "locks" => View::Locks,
            "kv" => View::Kv(kv),
            _ => View::Function(path.strip_prefix("functions/")?.parse().ok()?),
        })
    }

    /// Its address, below `/ui/`.
    fn address(&self) -> String {
        match self {
            View::Function(name) => format!("functions/{name}"),
            View::Kv(q) => format!(
                "kv?ns={}&prefix={}&start={}",
                percent_encode(&q.ns),
                percent_encode(&q.prefix),
                percent_encode(&q.start)
            ),
            other => other.menu().to_string(),
        }
    }

    /// Its address.
    pub(super) fn path(&self) -> String {
        format!("/ui/{}", self.address())
    }

    /// The menu entry it belongs to.
    fn menu(&self) -> &'static str {
        match self {
            View::Cluster => "cluster",
            View::Ring => "ring",
            View::Consensus => "consensus",
            View::Functions | View::Function(_) => "functions",
            View::Jobs => "jobs",
            View::Locks => "locks",
            View::Kv(_) => "kv",
        }
    }

    /// Whether it shows users' data, which the API gives only with the token.
    pub(super) fn private(&self) -> bool {
        matches!(self, View::Jobs | View::Locks | View::Kv(_))
    }

    fn title(&self) -> String {
        match self {
            View::Function(name) => format!("Function {name}"),
            View::Kv(q) if !q.ns.is_empty() => format!("Key-value: {}", q.ns),
            other => MENU
                .iter()
                .find(|(m, _)| *m == other.menu())
                .map(|(_, title)| title.to_string())
                .unwrap_or_default(),
        }
    }
}

/// What the last action did, shown above the page.
pub(super) enum Notice<'a> {
    Done(&'a str),
    Failed(&'a str),
}

/// A whole page around its live part.
pub(super) struct Page<'a> {
    pub(super) node: String,
    pub(super) view: &'a View,
    pub(super) signed_in: bool,
    pub(super) notice: Option<Notice<'a>>,
}

impl Page<'_> {
    pub(super) fn render(&self, controls: Markup, main: Markup) -> Markup {
        let view = self.view;
        let here = view.path();
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    title { (view.title()) " · weft · " (self.node) }
                    link rel="stylesheet" href="/ui/assets/ui.css";
                    script src="/ui/assets/ui.js" defer {}
                }
                body {
                    header {
                        a.brand href="/ui/cluster" { "weft" }
                        nav {
                            @for (menu, title) in MENU {
                                a.active[*menu == view.menu()] href=(format!("/ui/{menu}")) { (title) }
                            }
                        }
                        span.node { "node " strong #node { (self.node) } }
                        @if self.signed_in {
                            form.session method="post" action="/ui/logout" {
                                button type="submit" { "Sign out" }
                            }
                        } @else {
                            a.session href=(format!("/ui/login?next={}", percent_encode(&here))) { "Sign in" }
                        }
                    }
                    @match &self.notice {
                        Some(Notice::Done(text)) => p #notice .done { (text) },
                        Some(Notice::Failed(text)) => p #notice .failed { (text) },
                        None => {},
                    }
                    h1 { (view.title()) }
                    (controls)
                    main #live data-live=(format!("/ui/live/{}", view.address())) { (main) }
                    footer { "Updates live. " span #live-state { "" } }
                }
            }
        }
    }
}

/// The sign-in page.
pub(super) fn login(next: &str, error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "Sign in · weft" }
                link rel="stylesheet" href="/ui/assets/ui.css";
            }
            body.login {
                h1 { "Sign in to the dashboard" }
                p { "Jobs, locks, key-value data and every action need the cluster's token. "
                    "It is asked once per browser session; the browser keeps a value derived from it until it closes." }
                @if let Some(error) = error { p #notice .failed { (error) } }
                form method="post" action="/ui/login" {
                    label for="token" { "Token" }
                    input #token type="password" name="token" autocomplete="current-password" autofocus;
                    input type="hidden" name="next" value=(next);
                    button #sign-in type="submit" { "Sign in" }
                }
            }
        }
    }
}

/// Forms above the live part (so an update never replaces what is being typed).
pub(super) async fn controls(app: &App, view: &View) -> Markup {
    let View::Kv(q) = view else {
        return html! {};
    };
    let spaces = namespaces(app).await;
    html! {
        form.controls method="get" action="/ui/kv" {
            label { "Namespace " input #ns name="ns" list="namespaces" value=(q.ns) placeholder="fn.hello"; }
            datalist #namespaces { @for ns in &spaces { option value=(ns) {} } }
            label { "Key prefix " input #prefix name="prefix" value=(q.prefix); }
            button type="submit" { "Show" }
        }
    }
}

/// The live part of a page; a failure to read is shown in its place.
pub(super) async fn main(app: &App, view: &View) -> Markup {
    let shown = match view {
        View::Cluster => Ok(cluster(app)),
        View::Ring => Ok(ring(app)),
        View::Consensus => Ok(consensus(app)),
        View::Functions => functions(app).await,
        View::Function(name) => function(app, name).await,
        View::Jobs => jobs(app, &view.path()).await,
        View::Locks => locks(app).await,
        View::Kv(q) => kv(app, q, &view.path()).await,
    };
    shown.unwrap_or_else(|e| html! { p.failed { "This node could not read it: " (e) } })
}

fn cluster(app: &App) -> Markup {
    let set = app.cluster.membership.members();
    let now = crate::replication::now_ms();
    let s = &set.stats;
    html! {
        p.summary {
            (set.count(MemberState::Alive)) " alive, "
            (set.count(MemberState::Suspect)) " suspect, "
            (set.count(MemberState::Down)) " down"
        }
        table #members {
            thead { tr {
                th { "Node" } th { "State" } th { "RTT" } th { "Capacity" } th { "Free" }
                th { "Tags" } th { "HTTP" } th { "QUIC" } th { "Group id" } th { "Incarnation" } th { "Since" }
            } }
            tbody { @for m in &set.members {
                tr data-node=(m.node) {
                    td { (m.node) @if m.is_self { " (this node)" } }
                    td class=(format!("state {}", state_name(m.state))) { (state_name(m.state)) }
                    td.num { @match m.rtt_ms { Some(r) => (format!("{r:.2} ms")), None => "—" } }
                    td.num.capacity { (m.capacity) }
                    td.num { @match m.free { Some(f) => (f), None => "—" } }
                    td { @for t in &m.tags { span.tag { (t) } " " } }
                    td { @match m.http { Some(h) => a href=(format!("http://{h}/ui/cluster")) { (h) }, None => "—" } }
                    td { (m.addr) }
                    td.num { (m.group_id) }
                    td.num { (m.incarnation) }
                    td { (ago(now.saturating_sub(m.since_ms))) " ago" }
                }
            } }
        }
        h2 { "Failure detector (this node)" }
        dl.facts {
            dt { "Probes" } dd { (s.probes) " (" (s.probes_failed) " failed)" }
            dt { "Suspicions" } dd { (s.suspicions) " (" (s.refuted) " refuted, " (s.extended) " extended)" }
            dt { "Declared down" } dd { (s.declared_down) }
            dt { "Late timers" } dd { (s.late_timers) }
            dt { "Health" } dd { (s.health) " (0 is healthy)" }
        }
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    }
}

fn ring(app: &App) -> Markup {
    let s = app.cluster.replication.status();
    let now = crate::replication::now_ms();
    html! {
        dl.facts #ring-facts {
            dt { "Replication N/R/W" } dd #nrw { (s.default) }
            @for (ns, q) in &s.namespaces { dt { "Namespace " (ns) } dd { (q) } }
            dt { "Virtual nodes per node" } dd #vnodes { (s.vnodes) }
            dt { "Ring" } dd #transition {
                @if s.in_transition { "in transition: earlier rings are still consulted" } @else { "settled" }
                ", changed " (ago(s.ring_changed_ms_ago)) " ago"
            }
            dt { "Entries held here" } dd #keys { (s.keys) }
            dt { "Hints held here" } dd #hints { (s.hints) }
            dt { "Anti-entropy" } dd {
                "every " (ago(s.anti_entropy_interval_ms)) ", " (s.anti_entropy_rounds) " rounds; "
                @match s.anti_entropy_lag_ms {
                    Some(lag) => { "every peer last found in sync " (ago(lag)) " ago" },
                    None => "not yet in sync with every peer",
                }
            }
            dt { "Version clock ahead of wall clock" } dd { (s.clock_ahead_ms) " ms" }
        }
        table #shares {
            thead { tr {
                th { "Node" } th { "Primary share" } th { "Replica share" } th { "Hints for it" } th { "Last anti-entropy exchange" }
            } }
            tbody { @for n in &s.nodes {
                tr data-node=(n.node) {
                    td { (n.node) }
                    td.num.share { (format!("{:.1}%", n.share * 100.0)) meter value=(n.share) {} }
                    td.num { (format!("{:.1}%", n.replica_share * 100.0)) }
                    td.num { (n.hints) }
                    td { @match &n.sync {
                        Some(p) => {
                            (ago(now.saturating_sub(p.at_ms))) " ago: "
                            @if let Some(e) = &p.error { span.failed { (e) } }
                            @else if p.in_sync { "in sync" }
                            @else { (p.differing) " ranges differed, " (p.pulled) " pulled, " (p.pushed) " pushed" }
                        },
                        None => "—",
                    } }
                }
            } }
        }
        h2 { "Counters (this node)" }
        table.counters { tbody { @for (name, value) in &s.counters {
            tr { td { (name.replace('_', " ")) } td.num { (value) } }
        } } }
    }
}

fn consensus(app: &App) -> Markup {
    let g = app.cluster.consensus.status();
    let index = |i: Option<u64>| i.map_or("—".to_string(), |i| i.to_string());
    html! {
        dl.facts {
            dt { "Leader" } dd #leader { @match &g.leader { Some(l) => (l), None => "none known (election under way or no quorum)" } }
            dt { "Term" } dd #term { (g.term) }
            dt { "This node" } dd #role { (g.role) " (id " (g.id) ")" }
            dt { "Log" } dd {
                "last " (index(g.last_log_index)) ", committed " (index(g.committed_index))
                ", applied " span #applied { (index(g.applied_index)) } ", snapshot " (index(g.snapshot_index))
            }
        }
        h2 { "Voters" }
        table #voters {
            thead { tr { th { "Id" } th { "Node" } th { "Entries behind the leader" } } }
            tbody { @for v in &g.voters {
                tr data-node=(v.name) {
                    td.num { (v.id) }
                    td { (v.name) @if g.leader.as_ref() == Some(&v.name) { " (leader)" } }
                    td.num { @match v.lag { Some(l) => (l), None => "known on the leader" } }
                }
            } }
        }
        @if !g.learners.is_empty() {
            h2 { "Learners" }
            table #learners { tbody { @for l in &g.learners {
                tr data-node=(l.name) { td.num { (l.id) } td { (l.name) } td.num { @match l.lag { Some(l) => (l), None => "—" } } }
            } } }
        }
    }
}

async fn functions(app: &App) -> Result<Markup, ApiError> {
    let list = app.functions.list(Consistency::Local).await?;
    let now = crate::replication::now_ms();
    Ok(html! {
        @if list.is_empty() { p { "No functions yet: " code { "weft deploy NAME FILE.wasm" } } }
        @else {
            table #functions {
                thead { tr {
                    th { "Name" } th { "Kind" } th { "Version" } th { "Module" } th { "Size" }
                    th { "Deployed" } th { "Runs under" } th {}
                } }
                tbody { @for r in &list {
                    @let d = r.active();
                    tr data-function=(r.name) {
                        td { a href=(format!("/ui/functions/{}", r.name)) { (r.name) } }
                        td { (d.kind) }
                        td.num.version { (r.current + 1) " of " (r.history.len()) }
                        td { code { (short(&d.digest.to_string())) } }
                        td.num { (bytes(d.size)) }
                        td { (ago(now.saturating_sub(d.deployed_at_ms))) " ago" }
                        td {
                            @if let Some(k) = &d.lock_key { "lock by " (k) }
                            @else if let Some(k) = &d.route_key { "key owner by " (k) }
                            @else { "any node" }
                        }
                        td { @if r.current > 0 { (rollback_button(&r.name, "/ui/functions")) } }
                    }
                } }
            }
        }
    })
}

fn rollback_button(name: &FunctionName, back: &str) -> Markup {
    html! {
        form.action method="post" action=(format!("/ui/functions/{name}/rollback")) {
            input type="hidden" name="back" value=(back);
            button.rollback type="submit" title="Serve the version before this one" { "Roll back" }
        }
    }
}

async fn function(app: &App, name: &FunctionName) -> Result<Markup, ApiError> {
    let (record, _) = app
        .functions
        .record(name, Consistency::Local)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no function named `{name}`")))?;
    let now = crate::replication::now_ms();
    let back = format!("/ui/functions/{name}");
    Ok(html! {
        p {
            "Version " strong #version { (record.current + 1) } " of " (record.history.len()) " serves. "
            @if record.current > 0 { (rollback_button(name, &back)) }
        }
        h2 { "Deploy history" }
        table #history {
            thead { tr {
                th { "Version" } th { "Module" } th { "Kind" } th { "Size" } th { "Deployed" }
                th { "Timeout" } th { "Memory" } th { "Configuration keys" }
            } }
            tbody { @for (i, d) in record.history.iter().enumerate().rev() {
                tr.current[i == record.current] {
                    td.num { (i + 1) @if i == record.current { " (serving)" } }
                    td { code title=(d.digest) { (short(&d.digest.to_string())) } }
                    td { (d.kind) }
                    td.num { (bytes(d.size)) }
                    td { (ago(now.saturating_sub(d.deployed_at_ms))) " ago" }
                    td { @match d.limits.timeout_ms { Some(t) => (ago(t)), None => "node default" } }
                    td { @match d.limits.memory_bytes { Some(m) => (bytes(m)), None => "node default" } }
                    td { @for k in d.config.keys() { code { (k) } " " } }
                }
            } }
        }
        p.hint { "A rollback serves the version before the serving one; a deploy after a rollback forgets the versions after it." }
    })
}

async fn jobs(app: &App, back: &str) -> Result<Markup, ApiError> {
    let mut list = app.jobs.list().await?;
    // Running jobs first.
    list.sort_by_key(|j| j.status != JobStatus::Running);
    Ok(html! {
        @if list.is_empty() { p { "No jobs yet: " code { "weft job run FUNCTION INPUT" } } }
        @for j in &list { (job(j, back)) }
    })
}

fn job(j: &JobRecord, back: &str) -> Markup {
    let p = &j.progress;
    let status = format!("{:?}", j.status).to_lowercase();
    html! {
        section.job data-job=(j.id) data-status=(status) {
            h2 {
                code { (j.id) } " " (j.function) " "
                span class=(format!("status {status}")) { (status) }
                @if j.status == JobStatus::Running {
                    form.action method="post" action=(format!("/ui/jobs/{}/cancel", j.id)) {
                        input type="hidden" name="back" value=(back);
                        button.cancel type="submit" { "Cancel" }
                    }
                }
            }
            @if let Some(e) = &j.error { p.failed { (e) } }
            table.phases { tbody {
                tr {
                    th { "Map" }
                    td { progress max=(p.maps_total.max(1)) value=(p.maps_done) {} }
                    td.num { span.maps-done { (p.maps_done) } " / " span.maps-total { (p.maps_total) } }
                    td { (bytes(j.mapped_bytes)) " of " (bytes(j.input_bytes)) " read"
                        @if let Some(ms) = j.map_ms { ", in " (ago(ms)) } }
                }
                tr {
                    th { "Reduce" }
                    td { progress max=(p.reduces_total.max(1)) value=(p.reduces_done) {} }
                    td.num { span.reduces-done { (p.reduces_done) } " / " (p.reduces_total) }
                    td { (bytes(j.shuffled_bytes)) " shuffled, " (bytes(j.fetched_bytes)) " fetched, "
                        (bytes(j.spilled_bytes)) " spilled" }
                }
            } }
            dl.facts {
                dt { "Elapsed" } dd { (ago(j.elapsed_ms)) }
                dt { "Attempts" } dd {
                    (p.maps_started) " map attempts (" (p.maps_local) " beside their chunk), "
                    (p.retries) " retried, " (p.speculative) " speculative, " (p.maps_recomputed) " recomputed"
                }
                dt { "Coordinator" } dd { @match &j.coordinator { Some(c) => (c), None => "—" } }
                dt { "Attempts by node" } dd { @for (node, n) in &j.tasks_by_node { (node) ": " (n) " " } }
                dt { "Output" } dd { (j.output_records) " records in " (j.reducers) " partitions" }
            }
        }
    }
}

async fn locks(app: &App) -> Result<Markup, ApiError> {
    let list = app.cluster.locks.list().await?;
    Ok(html! {
        @if list.is_empty() { p { "No lock is held." } }
        @else {
            table #locks {
                thead { tr {
                    th { "Lock" } th { "Holder" } th { "Fencing token" } th { "Lease" } th { "Left" } th { "Waiting" }
                } }
                tbody { @for l in &list {
                    tr data-lock=(l.key) {
                        td { code { (l.key) } }
                        td.holder { (l.holder) }
                        td.num.token { (l.token) }
                        td.num { (ago(l.lease_ms)) }
                        td.num { @match l.lease_left_ms { Some(ms) => (ago(ms)), None => "leader not reached" } }
                        td { @for w in &l.waiters { span.tag { (w) } " " } }
                    }
                } }
            }
        }
    })
}

/// The namespaces the browser offers: those of deployed functions.
async fn namespaces(app: &App) -> Vec<String> {
    let mut spaces: Vec<String> = app
        .functions
        .list(Consistency::Local)
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| {
            r.active()
                .kv_namespace
                .clone()
                .unwrap_or_else(|| Namespace::of_function(&r.name).to_string())
        })
        .collect();
    spaces.sort();
    spaces.dedup();
    spaces
}

async fn kv(app: &App, q: &KvQuery, back: &str) -> Result<Markup, ApiError> {
    if q.ns.is_empty() {
        let spaces = namespaces(app).await;
        return Ok(html! {
            p { "Choose a namespace above. Each function has its own, " code { "fn.NAME" } "." }
            ul #namespace-list { @for ns in &spaces {
                li { a href=(format!("/ui/kv?ns={}", percent_encode(ns))) { (ns) } }
            } }
        });
    }
    let ns: Namespace = q.ns.parse()?;
    let page = super::super::kv::scan_page(app, &ns, &q.prefix, &q.start, KV_PAGE).await?;
    let ns_path = percent_encode(&q.ns);
    Ok(html! {
        @if !page.missing.is_empty() {
            p.failed { "Not every replica answered (" @for m in &page.missing { (m) " " } "): keys only they hold are missing." }
        }
        @if page.entries.is_empty() { p { "No keys" @if !q.prefix.is_empty() { " starting with " code { (q.prefix) } } "." } }
        @else {
            table #keys {
                thead { tr { th { "Key" } th { "Value" } th { "Version" } th { "Expires in" } th {} } }
                tbody { @for e in &page.entries {
                    tr data-key=[e.key.as_deref()] {
                        td { code { @match (&e.key, &e.key_hex) {
                            (Some(k), _) => (k),
                            (None, Some(h)) => { "hex " (h) },
                            _ => "",
                        } } }
                        td.value { @match (&e.value, &e.value_hex) {
                            (Some(v), _) => (cut(v)),
                            (None, Some(h)) => { "hex " (cut(h)) },
                            _ => "",
                        } }
                        td { code.version { (e.version) } }
                        td.num { @match e.ttl_ms { Some(ms) => (ago(ms)), None => "never" } }
                        td { @if let Some(k) = &e.key {
                            form.action method="post" action=(format!("/ui/kv/{ns_path}/delete")) {
                                input type="hidden" name="key" value=(k);
                                input type="hidden" name="back" value=(back);
                                button.delete type="submit" { "Delete" }
                            }
                        } }
                    }
                } }
            }
            @if let Some(next) = &page.next {
                p { a #next-page href=(View::Kv(KvQuery { ns: q.ns.clone(), prefix: q.prefix.clone(), start: next.clone() }).path()) { "Next " (KV_PAGE) " keys" } }
            }
        }
    })
}

/// A value as shown: at most [`VALUE_SHOWN`] characters.
fn cut(text: &str) -> String {
    match text.char_indices().nth(VALUE_SHOWN) {
        Some((at, _)) => format!("{}… ({} bytes)", &text[..at], text.len()),
        None => text.to_string(),
    }
}

/// The first 12 characters of a digest.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// A duration in milliseconds for people: `850 ms`, `4.2 s`, `3 min`, `2 h`, `5 d`.
fn ago(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1e3),
        60_000..3_600_000 => format!("{} min", ms / 60_000),
        3_600_000..86_400_000 => format!("{} h", ms / 3_600_000),
        _ => format!("{} d", ms / 86_400_000),
    }
}

/// A size for people: `512 B`, `1.5 KiB`, `12.0 MiB`.
fn bytes(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_parse_from_their_addresses_and_back() {
        let check = |path: &str, expected: Option<&str>| {
            let view = View::parse(path, KvQuery::default());
            assert_eq!(view.map(|v| v.path()).as_deref(), expected, "{path}");
        };
        check("cluster", Some("/ui/cluster"));
        check("functions", Some("/ui/functions"));
        check("functions/hello", Some("/ui/functions/hello"));
        check("functions/Not A Name", None);
        check("kv", Some("/ui/kv?ns=&prefix=&start="));
        check("nothing", None);
        let kv = KvQuery {
            ns: "fn.hello".into(),
            prefix: "a b/&".into(),
            start: String::new(),
        };
        assert_eq!(
            View::parse("kv", kv).unwrap().path(),
            "/ui/kv?ns=fn.hello&prefix=a%20b%2F%26&start="
        );
        assert!(View::Jobs.private() && !View::Cluster.private());
    }

    #[test]
    fn sizes_durations_and_values_read_well() {
        assert_eq!(ago(850), "850 ms");
        assert_eq!(ago(4_200), "4.2 s");
        assert_eq!(ago(180_000), "3 min");
        assert_eq!(ago(7_200_000), "2 h");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 << 20), "12.0 MiB");
        assert_eq!(cut("short"), "short");
        let long = "é".repeat(300);
        assert_eq!(cut(&long), format!("{}… (600 bytes)", "é".repeat(200)));
    }
}
