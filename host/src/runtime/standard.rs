//! The standard WASI interfaces a component written for other platforms (Spin, wasmCloud)
//! imports, served by Weft: `wasi:keyvalue` (store, atomics, batch) by the function's
//! replicated key-value namespace, through the same paths as Weft's own `kv` import (locks,
//! fencing and a lock-protected handler's gate included), and `wasi:config/store` by the
//! configuration given at deploy.

use wasmtime::component::Resource;

use super::bindings::config::wasi::config::store as config;
use super::bindings::handler::weft::plugin::kv;
use super::bindings::keyvalue::Bucket;
use super::bindings::keyvalue::wasi::keyvalue::{atomics, batch, store};
use super::state::GuestState;
use crate::replication::ReplicationError;

/// Keys in one page of `list-keys`.
const PAGE: usize = 1000;

/// A Weft key-value failure as the standard interface says it.
fn other(e: kv::Error) -> store::Error {
    store::Error::Other(match e {
        kv::Error::TooLarge(m) | kv::Error::Unavailable(m) | kv::Error::Fenced(m) => m,
    })
}

impl store::Host for GuestState {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        if !identifier.is_empty() && identifier != "default" {
            return Err(store::Error::Other(format!(
                "no bucket `{identifier}`: a Weft function has one bucket, its key-value namespace; open it as \"default\""
            )));
        }
        self.table
            .push(Bucket)
            .map_err(|e| store::Error::Other(e.to_string()))
    }
}

impl store::HostBucket for GuestState {
    async fn get(
        &mut self,
        _: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        kv::Host::get(self, key.into_bytes()).await.map_err(other)
    }

    async fn set(
        &mut self,
        _: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        kv::Host::set(self, key.into_bytes(), value)
            .await
            .map_err(other)
    }

    async fn delete(&mut self, _: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        kv::Host::delete(self, key.into_bytes())
            .await
            .map(|_| ())
            .map_err(other)
    }

    async fn exists(&mut self, _: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        kv::Host::get(self, key.into_bytes())
            .await
            .map(|v| v.is_some())
            .map_err(other)
    }

    /// Pages of [`PAGE`] keys; the cursor counts the keys before the page, so a page costs a
    /// scan from the first key.
    async fn list_keys(
        &mut self,
        _: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let kv = self
            .kv
            .clone()
            .ok_or_else(|| store::Error::Other("key-value storage is not available".into()))?;
        let mut skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        let mut start = Vec::new();
        let mut keys = Vec::new();
        loop {
            let (page, next) = kv
                .keys(&start, PAGE)
                .await
                .map_err(|e| store::Error::Other(e.to_string()))?;
            let dropped = skip.min(page.len());
            skip -= dropped;
            for k in page.into_iter().skip(dropped) {
                if keys.len() == PAGE {
                    break;
                }
                keys.push(String::from_utf8_lossy(&k).into_owned());
            }
            match next {
                Some(n) if keys.len() < PAGE => start = n,
                Some(_) => {
                    let after = cursor.unwrap_or(0) + keys.len() as u64;
                    return Ok(store::KeyResponse {
                        keys,
                        cursor: Some(after),
                    });
                }
                None => return Ok(store::KeyResponse { keys, cursor: None }),
            }
        }
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for GuestState {
    /// The number is kept as decimal text, as other hosts of the interface keep it, so `get`
    /// reads it as such.
    async fn increment(
        &mut self,
        _: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        self.update(key.into_bytes(), |old| {
            let now = match old {
                None => 0,
                Some(v) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|t| t.parse::<u64>().ok())
                    .ok_or_else(|| {
                        ReplicationError::BadInput(
                            "increment: the value is not a number in decimal text".into(),
                        )
                    })?,
            };
            let new = now.checked_add(delta).ok_or_else(|| {
                ReplicationError::BadInput(format!("increment: {now} + {delta} overflows a u64"))
            })?;
            Ok((new.to_string().into_bytes(), new))
        })
        .await
        .map_err(other)
    }
}

impl batch::Host for GuestState {
    async fn get_many(
        &mut self,
        _: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            let value = kv::Host::get(self, key.clone().into_bytes())
                .await
                .map_err(other)?;
            out.push(value.map(|v| (key, v)));
        }
        Ok(out)
    }

    async fn set_many(
        &mut self,
        _: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        for (key, value) in key_values {
            kv::Host::set(self, key.into_bytes(), value)
                .await
                .map_err(other)?;
        }
        Ok(())
    }

    async fn delete_many(
        &mut self,
        _: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        for key in keys {
            kv::Host::delete(self, key.into_bytes())
                .await
                .map_err(other)?;
        }
        Ok(())
    }
}

impl config::Host for GuestState {
    fn get(&mut self, key: String) -> Result<Option<String>, config::Error> {
        Ok(self.config.get(&key).cloned())
    }

    fn get_all(&mut self) -> Result<Vec<(String, String)>, config::Error> {
        Ok(self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
