//! Raft's messages over the node's QUIC router, both ends: the client openraft's replication
//! uses, and this node answering its peers.
//!
//! A snapshot is not pushed in chunks: the leader offers it ([`Request::Snapshot`]) and the
//! follower pulls it as one stream of pieces ([`Request::ReadSnapshot`]) from the leader's
//! current snapshot, then installs it.

use std::io::Cursor;
use std::net::SocketAddr;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, ReplicationClosed,
    StreamingError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{OptionalSend, Raft, Vote};

use super::storage::MachineStore;
use super::wire::{RaftWire, Request, Response};
use super::{Member, RaftId, TypeConfig};
use crate::rpc::{self, Router};
use crate::transport::Transport;

/// Bytes per piece of a streamed snapshot.
const PIECE: usize = 1 << 20;

/// Makes a client per member.
pub struct Network {
    pub transport: Transport,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: RaftId, node: &Member) -> Peer {
        Peer {
            transport: self.transport.clone(),
            target,
            addr: node.addr,
        }
    }
}

/// The client of one member.
pub struct Peer {
    transport: Transport,
    target: RaftId,
    addr: Option<SocketAddr>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failed(String);

impl Peer {
    async fn ask(&self, request: &Request, within: Duration) -> Result<Response, Failed> {
        let addr = self
            .addr
            .ok_or_else(|| Failed(format!("member {} has no address", self.target)))?;
        rpc::call_within::<RaftWire>(&self.transport, addr, request, within)
            .await
            .map_err(|e| Failed(e.to_string()))
    }
}

fn unexpected(r: &Response) -> Failed {
    Failed(format!("unexpected answer {r:?}"))
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        match self
            .ask(
                &Request::Append {
                    to: self.target,
                    rpc,
                },
                option.hard_ttl(),
            )
            .await
        {
            Ok(Response::Append(r)) => Ok(r),
            Ok(other) => Err(RPCError::Network(NetworkError::new(&unexpected(&other)))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, Member, RaftError<RaftId, InstallSnapshotError>>,
    > {
        // Snapshots go through `full_snapshot`; openraft calls this only from its default
        // chunked sender, which `full_snapshot` replaces.
        Err(RPCError::Network(NetworkError::new(&Failed(
            "snapshots are sent whole, not in chunks".into(),
        ))))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, Member, RaftError<RaftId>>> {
        match self
            .ask(
                &Request::Vote {
                    to: self.target,
                    rpc,
                },
                option.hard_ttl(),
            )
            .await
        {
            Ok(Response::Vote(r)) => Ok(r),
            Ok(other) => Err(RPCError::Network(NetworkError::new(&unexpected(&other)))),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<RaftId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<RaftId>, StreamingError<TypeConfig, Fatal<RaftId>>> {
        let request = Request::Snapshot {
            to: self.target,
            vote,
            meta: snapshot.meta,
        };
        // The follower pulls the bytes before it answers.
        let within = option.hard_ttl().max(Duration::from_secs(60));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            answer = self.ask(&request, within) => match answer {
                Ok(Response::Installed(r)) => Ok(r),
                Ok(other) => Err(StreamingError::Network(NetworkError::new(&unexpected(&other)))),
                Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
            },
        }
    }
}

/// Answers the group's requests from other nodes.
pub fn serve(
    router: &Router,
    me: RaftId,
    raft: Raft<TypeConfig>,
    machine: MachineStore,
    transport: Transport,
) {
    router.register_streaming::<RaftWire, _>(move |caller, request| {
        let (raft, machine, transport) = (raft.clone(), machine.clone(), transport.clone());
        async move {
            let whole = |r: Response| Ok((r, futures::stream::empty().boxed()));
            let not_me = |to: RaftId| {
                Err(format!(
                    "this node is member {me} of the metadata group, not {to} (that member's node is gone, or came back with a wiped data directory)"
                ))
            };
            match request {
                Request::Append { to, .. } | Request::Vote { to, .. } | Request::Snapshot { to, .. }
                    if to != me =>
                {
                    not_me(to)
                }
                Request::Append { rpc: r, .. } => match raft.append_entries(r).await {
                    Ok(a) => whole(Response::Append(a)),
                    Err(e) => Err(e.to_string()),
                },
                Request::Vote { rpc: r, .. } => match raft.vote(r).await {
                    Ok(v) => whole(Response::Vote(v)),
                    Err(e) => Err(e.to_string()),
                },
                Request::Snapshot { vote, meta, .. } => {
                    let bytes = pull_snapshot(&transport, caller.addr, &meta.snapshot_id).await?;
                    let snapshot = Snapshot {
                        meta,
                        snapshot: Box::new(Cursor::new(bytes)),
                    };
                    match raft.install_full_snapshot(vote, snapshot).await {
                        Ok(r) => whole(Response::Installed(r)),
                        Err(e) => Err(e.to_string()),
                    }
                }
                Request::ReadSnapshot { id } => {
                    let mut machine = machine.clone();
                    let current = machine
                        .get_current_snapshot()
                        .await
                        .map_err(|e| e.to_string())?;
                    match current {
                        Some(s) if s.meta.snapshot_id == id => {
                            let bytes = s.snapshot.into_inner();
                            let size = bytes.len() as u64;
                            let pieces: Vec<Result<bytes::Bytes, String>> = bytes
                                .chunks(PIECE)
                                .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
                                .collect();
                            Ok((
                                Response::SnapshotSize(Some(size)),
                                futures::stream::iter(pieces).boxed(),
                            ))
                        }
                        _ => whole(Response::SnapshotSize(None)),
                    }
                }
                Request::ReadIndex => match raft.ensure_linearizable().await {
                    Ok(read) => whole(Response::ReadIndex(read.map(|l| l.index))),
                    Err(RaftError::APIError(
                        openraft::error::CheckIsLeaderError::ForwardToLeader(f),
                    )) => whole(Response::NotLeader(f.leader_node)),
                    Err(e) => whole(Response::Failed(e.to_string())),
                },
                Request::Propose(command) => match raft.client_write(command).await {
                    Ok(w) => whole(Response::Committed {
                        index: w.log_id.index,
                        outcome: w.data,
                    }),
                    Err(RaftError::APIError(
                        openraft::error::ClientWriteError::ForwardToLeader(f),
                    )) => whole(Response::NotLeader(f.leader_node)),
                    Err(e) => whole(Response::Failed(e.to_string())),
                },
                Request::Applied { index, within_ms } => {
                    let within = Duration::from_millis(within_ms.min(60_000));
                    let applied = raft
                        .wait(Some(within))
                        .applied_index_at_least(Some(index), "an entry to apply")
                        .await
                        .is_ok();
                    whole(Response::Applied(applied))
                }
            }
        }
        .boxed()
    });
}

/// Streams snapshot `id` from the node at `from`.
async fn pull_snapshot(
    transport: &Transport,
    from: SocketAddr,
    id: &str,
) -> Result<Vec<u8>, String> {
    let request = Request::ReadSnapshot { id: id.to_string() };
    let (head, mut pieces) =
        rpc::open::<RaftWire>(transport, from, &request, transport.rpc_timeout())
            .await
            .map_err(|e| format!("pulling snapshot {id}: {e}"))?;
    let size = match head {
        Response::SnapshotSize(Some(size)) => size,
        Response::SnapshotSize(None) => {
            return Err(format!(
                "snapshot {id} is no longer the leader's current one"
            ));
        }
        other => {
            return Err(format!(
                "pulling snapshot {id}: unexpected answer {other:?}"
            ));
        }
    };
    // The announced size is a hint: memory is reserved up to a bound, then grows as pieces
    // arrive.
    let mut bytes = Vec::with_capacity(size.min(64 << 20) as usize);
    while let Some(piece) = pieces
        .next()
        .await
        .map_err(|e| format!("pulling snapshot {id}: {e}"))?
    {
        bytes.extend_from_slice(&piece);
        if bytes.len() as u64 > size {
            return Err(format!(
                "snapshot {id} is longer than the {size} bytes announced"
            ));
        }
    }
    if (bytes.len() as u64) < size {
        return Err(format!(
            "snapshot {id} ended after {} of {size} bytes",
            bytes.len()
        ));
    }
    Ok(bytes)
}
