//! The dashboard at `/ui`: the cluster, the ring, the metadata group, functions, jobs,
//! locks and key-value data as server-rendered pages, kept live over server-sent events.
//!
//! Every page is plain HTML rendered here (maud); its main part is rendered again every
//! [`REFRESH`] and sent over `/ui/live/...` whenever it changed, and the one embedded script
//! swaps it in. Nothing is built by a JavaScript toolchain and nothing is fetched from
//! elsewhere: the stylesheet and script are compiled into the binary.
//!
//! Pages show what the JSON API shows, under the same rule: what the API gives without a
//! token (members, ring, metadata group, functions) the dashboard shows to anyone; jobs,
//! locks and key-value data, and every action (rollback, cancelling a job, deleting a key),
//! need the cluster's token, entered once per browser session. The session cookie holds a
//! value derived from the token (never the token), is `HttpOnly` and `SameSite=Strict` (so
//! another site cannot make the browser act), and ends with the browser session. Actions
//! call the same handlers as the API.

mod pages;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ApiError, App, Query, percent_encode};
use crate::tokens::constant_time_eq;
use pages::View;

/// How often a live page's main part is rendered again.
pub(crate) const REFRESH: Duration = Duration::from_millis(500);

/// The session cookie's name.
const COOKIE: &str = "weft_session";

/// The dashboard's routes.
pub(super) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/cluster") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/cluster") }))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/{view}", get(page))
        .route("/ui/functions/{name}", get(function_page))
        .route("/ui/live/{*view}", get(live))
        .route("/ui/functions/{name}/rollback", post(rollback))
        .route("/ui/jobs/{id}/cancel", post(cancel))
        .route("/ui/kv/{ns}/delete", post(delete_key))
}

/// Query parameters every page takes: the key-value browser's, and a note left by an action.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PageParams {
    /// Key-value browser: the namespace.
    #[serde(default)]
    ns: String,
    /// Key-value browser: only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// Key-value browser: from this key on.
    #[serde(default)]
    start: String,
    /// What the last action did.
    note: Option<String>,
    /// Why the last action failed.
    error: Option<String>,
}

impl PageParams {
    fn kv(&self) -> pages::KvQuery {
        pages::KvQuery {
            ns: self.ns.clone(),
            prefix: self.prefix.clone(),
            start: self.start.clone(),
        }
    }
}

async fn page(
    State(app): State<Arc<App>>,
    Path(view): Path<String>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Response {
    show(&app, &view, params, &headers).await
}

async fn function_page(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Response {
    show(&app, &format!("functions/{name}"), params, &headers).await
}

async fn show(app: &App, path: &str, params: PageParams, headers: &HeaderMap) -> Response {
    let Some(view) = View::parse(path, params.kv()) else {
        return ApiError::NotFound(format!(
            "no dashboard page `/ui/{path}`; the pages are listed at /ui/cluster"
        ))
        .into_response();
    };
    let signed_in = signed_in(app, headers);
    if view.private() && !signed_in {
        return to_login(&view.path());
    }
    let main = pages::main(app, &view).await;
    let notice = match (&params.note, &params.error) {
        (_, Some(e)) => Some(pages::Notice::Failed(e)),
        (Some(n), None) => Some(pages::Notice::Done(n)),
        (None, None) => None,
    };
    let page = pages::Page {
        node: app.cluster.replication.status().node.to_string(),
        view: &view,
        signed_in,
        notice,
    };
    html(
        StatusCode::OK,
        page.render(pages::controls(app, &view).await, main),
    )
}

/// The main part of a page, sent again whenever it changes.
async fn live(
    State(app): State<Arc<App>>,
    Path(view): Path<String>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Response {
    let Some(view) = View::parse(&view, params.kv()) else {
        return ApiError::NotFound(format!("no dashboard page `/ui/{view}`")).into_response();
    };
    if view.private() && !signed_in(&app, &headers) {
        return ApiError::Unauthorized("sign in at /ui/login first".into()).into_response();
    }
    let stopping = app.cluster.stopping.clone();
    let state = (app, view, None::<String>);
    let events = futures::stream::unfold(state, |(app, view, last)| async move {
        let mut last = last;
        loop {
            if last.is_some() {
                tokio::time::sleep(REFRESH).await;
            }
            let html = pages::main(&app, &view).await.into_string();
            if last.as_ref() != Some(&html) {
                // As a JSON string: one `data:` line, whatever the page holds.
                let event = Event::default()
                    .json_data(&html)
                    .expect("a string serializes");
                return Some((Ok::<_, Infallible>(event), (app, view, Some(html))));
            }
            last = Some(html);
        }
    });
    // Ends cleanly when the node stops, so an open page does not hold its shutdown up.
    let events = futures::StreamExt::take_until(events, stopping.cancelled_owned());
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginParams {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginForm {
    token: String,
    next: Option<String>,
}

async fn login_form(Query(params): Query<LoginParams>) -> Response {
    let next = safe_next(params.next.as_deref());
    html(StatusCode::OK, pages::login(&next, None))
}

async fn login(State(app): State<Arc<App>>, Form(form): Form<LoginForm>) -> Response {
    let next = safe_next(form.next.as_deref());
    let given = form.token.trim();
    if !constant_time_eq(given.as_bytes(), app.tokens.cluster_token().as_bytes()) {
        let why = "That is not this cluster's token. The node prints where its token file is when it starts (`token in ...`).";
        return html(StatusCode::UNAUTHORIZED, pages::login(&next, Some(why)));
    }
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; HttpOnly; SameSite=Strict",
        session_value(app.tokens.cluster_token())
    );
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie).expect("hex is a valid header value"),
    );
    response
}

async fn logout() -> Response {
    let mut response = Redirect::to("/ui/cluster").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&format!(
            "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"
        ))
        .expect("a valid header value"),
    );
    response
}

/// Where an action's form came from, to go back to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionForm {
    back: Option<String>,
    /// The key, for a deletion.
    key: Option<String>,
}

async fn rollback(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let done = async {
        let f = super::functions::rollback(State(app.clone()), Path(name.clone())).await?;
        Ok(format!(
            "rolled back `{name}`: version {} of {} serves",
            f.0.version, f.0.versions
        ))
    };
    act(&app, &headers, form.back.as_deref(), done).await
}

async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let done = async {
        let _accepted = super::jobs::cancel(State(app.clone()), Path(id.clone())).await?;
        Ok(format!(
            "cancelling job {id}: it ends once its running tasks stop"
        ))
    };
    act(&app, &headers, form.back.as_deref(), done).await
}

async fn delete_key(
    State(app): State<Arc<App>>,
    Path(ns): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Response {
    let done = async {
        let key = form
            .key
            .clone()
            .ok_or_else(|| ApiError::BadRequest("no key named".into()))?;
        let path = Path((ns.clone(), key.clone()));
        let w = super::kv::delete(State(app.clone()), path, Query(Default::default())).await?;
        Ok(format!(
            "deleted `{key}` from {ns} (version {})",
            w.0.version
        ))
    };
    act(&app, &headers, form.back.as_deref(), done).await
}

/// Runs an action for a signed-in browser (others are sent to sign in, and `action` never
/// runs), then goes back to the page it came from.
async fn act(
    app: &App,
    headers: &HeaderMap,
    back: Option<&str>,
    action: impl std::future::Future<Output = Result<String, ApiError>>,
) -> Response {
    let back = safe_next(back);
    if !signed_in(app, headers) {
        return to_login(&back);
    }
    after(&back, action.await)
}

/// Back to the page an action came from, with what it did or why it failed.
fn after(back: &str, done: Result<String, ApiError>) -> Response {
    let (name, text) = match done {
        Ok(note) => ("note", note),
        Err(e) => ("error", e.to_string()),
    };
    let join = if back.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{back}{join}{name}={}", percent_encode(&text))).into_response()
}

fn to_login(next: &str) -> Response {
    Redirect::to(&format!("/ui/login?next={}", percent_encode(next))).into_response()
}

/// `next` if it is a dashboard page, else the cluster page: a link cannot send a signed-in
/// browser elsewhere.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/ui/") && !n.contains("//") && !n.contains('\\') => n.to_string(),
        _ => "/ui/cluster".to_string(),
    }
}

/// The cookie value of a signed-in browser: derived from the token, so the cookie never
/// holds the token itself, and the same on every node of the cluster.
fn session_value(token: &str) -> String {
    blake3::derive_key("weft dashboard session 2026-12", token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn signed_in(app: &App, headers: &HeaderMap) -> bool {
    let expected = session_value(app.tokens.cluster_token());
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| {
            name == COOKIE && constant_time_eq(value.as_bytes(), expected.as_bytes())
        })
}

/// An HTML answer that may load only this node's own stylesheet and script.
fn html(status: StatusCode, markup: maud::Markup) -> Response {
    let mut response = (status, Html(markup.into_string())).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "ui.css" => (include_str!("ui.css"), "text/css; charset=utf-8"),
        "ui.js" => (include_str!("ui.js"), "text/javascript; charset=utf-8"),
        _ => {
            return ApiError::NotFound(format!("no dashboard asset `{file}`")).into_response();
        }
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_dashboard_pages_are_places_to_go_back_to() {
        let check = |next: Option<&str>, expected: &str| assert_eq!(safe_next(next), expected);
        check(Some("/ui/jobs"), "/ui/jobs");
        check(
            Some("/ui/kv?ns=fn.hello&prefix=a"),
            "/ui/kv?ns=fn.hello&prefix=a",
        );
        check(None, "/ui/cluster");
        check(Some("https://elsewhere.example/ui/"), "/ui/cluster");
        check(Some("//elsewhere.example/ui/"), "/ui/cluster");
        check(Some("/ui//elsewhere.example"), "/ui/cluster");
        check(Some("/ui/\\elsewhere.example"), "/ui/cluster");
        check(Some("/v1/kv/a"), "/ui/cluster");
    }

    #[test]
    fn the_session_value_is_not_the_token_and_differs_per_token() {
        let a = session_value("secret-a");
        assert_eq!(a.len(), 64);
        assert!(!a.contains("secret"));
        assert_eq!(a, session_value("secret-a"));
        assert_ne!(a, session_value("secret-b"));
    }
}
