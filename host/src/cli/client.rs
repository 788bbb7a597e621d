//! The CLI's HTTP client for a node's API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

/// Talks to one node.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:7070`).
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--node must be a URL such as http://127.0.0.1:7070, not `{base}`");
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` with the token attached when there is one.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends a request and decodes a JSON answer, turning an error answer into a clear error.
    pub async fn json<T: DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let resp = self.send(req).await?;
        resp.json()
            .await
            .context("the node's answer is not the JSON expected")
    }

    /// Sends a request; an error answer becomes an error carrying the node's message.
    pub async fn send(&self, req: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let resp = req
            .send()
            .await
            .with_context(|| format!("could not reach the node at {}", self.base))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or(body);
        if status == StatusCode::UNAUTHORIZED && self.token.is_none() {
            bail!(
                "{status}: {message}\nhint: set WEFT_TOKEN, or pass --token-file <data-dir>/token"
            );
        }
        bail!("{status}: {message}")
    }
}

/// The token: `--token`/`WEFT_TOKEN`, else the file named by `--token-file`/`WEFT_TOKEN_FILE`,
/// else the token file in the default data directory, if any.
pub fn resolve_token(
    token: Option<String>,
    token_file: Option<PathBuf>,
) -> anyhow::Result<Option<String>> {
    if let Some(t) = token {
        return Ok(Some(t));
    }
    if let Some(f) = token_file {
        let t = std::fs::read_to_string(&f)
            .with_context(|| format!("reading the token file {}", f.display()))?;
        return Ok(Some(t.trim().to_string()));
    }
    let default = super::default_data_dir().join(crate::node::TOKEN_FILE);
    Ok(std::fs::read_to_string(default)
        .ok()
        .map(|t| t.trim().to_string()))
}
