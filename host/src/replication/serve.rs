//! This node answering other nodes' key-value requests ([`wire::Request`]): as a replica,
//! as a key's primary for conditional writes, and as an anti-entropy peer.

use futures::FutureExt;

use super::wire::{KvWire, Request, Response};
use super::{ANSWER_BYTES, CasFailure, Overrides, ReplicationError, Replicator, check_limits};
use crate::rpc::Router;

impl Replicator {
    /// Answers other nodes' key-value requests.
    pub fn serve(&self, router: &Router) {
        let this = self.clone();
        router.register::<KvWire, _>(move |_, request| {
            let r = this.clone();
            async move { answer(&r, request).await.map_err(|e| e.to_string()) }.boxed()
        });
    }
}

/// Answers a key-value or anti-entropy request from this node's copies.
async fn answer(r: &Replicator, request: Request) -> Result<Response, ReplicationError> {
    Ok(match request {
        Request::KvGet { key, fences } => match r.local_get_fenced(&key, &fences).await? {
            Ok(entry) => Response::KvEntry(entry),
            Err((lock, seen)) => Response::KvRefused { lock, seen },
        },
        Request::KvPutMany(writes) => Response::KvPutMany(r.apply_many(&writes).await?),
        Request::KvPush { entries, hinted } => {
            r.apply_all(entries, hinted).await?;
            Response::Done
        }
        Request::KvPurge(keys) => {
            r.purge(&keys).await;
            Response::Done
        }
        Request::KvFetch(keys) => {
            // As many as fit one answer, in order; the caller asks again for the rest.
            let (mut out, mut size, mut consumed) = (Vec::new(), 0, 0u32);
            for k in keys {
                if size > ANSWER_BYTES {
                    break;
                }
                consumed += 1;
                if let Some(e) = r.local_get(&k)? {
                    size += k.len() + e.value.as_ref().map_or(0, Vec::len);
                    out.push((k, e));
                }
            }
            Response::KvFetched {
                entries: out,
                consumed,
            }
        }
        Request::KvScan {
            prefix,
            start,
            limit,
        } => {
            let (entries, more) = r.local_scan(&prefix, &start, limit.min(100_000) as usize)?;
            Response::KvScanned { entries, more }
        }
        Request::KvCas {
            ns,
            key,
            value,
            expect,
            fences,
            w,
            settle_ms,
            ttl_ms,
        } => {
            let full = ns.key(&key);
            check_limits(&key, value.as_deref())?;
            let o = Overrides {
                r: None,
                w,
                settle: settle_ms.map(std::time::Duration::from_millis),
                ttl: ttl_ms.map(std::time::Duration::from_millis),
            };
            Response::KvCas(
                r.conditional_here(&ns, &full, value, expect, &fences, o)
                    .await
                    .map_err(CasFailure::from),
            )
        }
        Request::AeHandedOff(placement) => Response::HandedOff(r.handed_off(placement)),
        Request::AeRoot { from, root } => Response::AeSame(r.root_of(from).await? == root),
        Request::AeLeaves { from, leaves } => {
            let (differing, fine) = r.answer_leaves(from, leaves).await?;
            Response::AeFine { differing, fine }
        }
        Request::AeVersions { from, fine } => {
            let (differing, have) = r.answer_versions(from, fine).await?;
            Response::AeDiff { differing, have }
        }
    })
}
