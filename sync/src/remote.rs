//! A session's side across the network: how the side that holds the directory serves the
//! requests of [`crate::endpoint`] ([`Served`]), and the endpoint that sends them
//! ([`RemoteEndpoint`]) through whatever carries them (a [`Carrier`]: the agent's QUIC
//! endpoint, or a loopback in tests). Large files travel in chunks both ways, so no message
//! comes near a frame's limit.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use crate::delta::Signature;
use crate::endpoint::{
    Answer, CHUNK, Content, Endpoint, EndpointError, MAX_STAGED, Refusal, RefusalCode, Request,
    SessionReport, checked,
};
use crate::filter::Filter;
use crate::history::{Seen, Since, Version};
use crate::local_endpoint::LocalEndpoint;
use crate::path::RelPath;
use crate::reconcile::Change;
use crate::tree::Digest;

/// The side that holds a directory, serving another side's requests.
#[derive(Debug)]
pub struct Served {
    root: PathBuf,
    endpoint: Option<(Vec<String>, bool, LocalEndpoint)>,
    staged: BTreeMap<RelPath, Vec<u8>>,
    wake: Wake,
}

/// Called on every change the root's watcher sees.
#[derive(Clone)]
struct Wake(std::sync::Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for Wake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Wake")
    }
}

impl Served {
    pub fn new(root: impl Into<PathBuf>) -> Served {
        Served::with_wake(root, || {})
    }

    /// Calls `wake` on every change the root's watcher sees (once a scan has started it).
    pub fn with_wake(root: impl Into<PathBuf>, wake: impl Fn() + Send + Sync + 'static) -> Served {
        Served {
            root: root.into(),
            endpoint: None,
            staged: BTreeMap::new(),
            wake: Wake(std::sync::Arc::new(wake)),
        }
    }

    fn endpoint(&mut self) -> Result<&mut LocalEndpoint, EndpointError> {
        self.endpoint
            .as_mut()
            .map(|(_, _, endpoint)| endpoint)
            .ok_or_else(|| EndpointError::Unavailable("scan first".into()))
    }

    /// Scans with this filter (a new one starts the root's history afresh) and answers what
    /// changed since `since`.
    async fn scan(
        &mut self,
        ignore: Vec<String>,
        ignore_vcs: bool,
        since: Option<Version>,
    ) -> Result<Since, EndpointError> {
        let same = self
            .endpoint
            .as_ref()
            .is_some_and(|(i, v, _)| *i == ignore && *v == ignore_vcs);
        if !same {
            let filter = Filter::new(&ignore, ignore_vcs).map_err(|e| {
                EndpointError::Refused(Refusal::new(RefusalCode::InvalidFilter, e.to_string()))
            })?;
            std::fs::create_dir_all(&self.root).map_err(|e| {
                EndpointError::Unavailable(format!("cannot make {}: {e}", self.root.display()))
            })?;
            let mut endpoint = LocalEndpoint::new(&self.root, filter);
            // Without a watcher every scan reads the whole tree: slower, still right.
            let wake = self.wake.clone();
            let _ = endpoint.watch(move || (wake.0)());
            self.endpoint = Some((ignore, ignore_vcs, endpoint));
        }
        self.endpoint()?.scan(since).await
    }

    pub async fn serve(&mut self, request: Request) -> Answer {
        match self.answer(request).await {
            Ok(answer) => answer,
            Err(error) => error.into(),
        }
    }

    async fn answer(&mut self, request: Request) -> Result<Answer, EndpointError> {
        match request {
            Request::Scan { ignore, ignore_vcs } => {
                let answer = self.scan(ignore, ignore_vcs, None).await?;
                match answer.seen {
                    Seen::Whole(tree) => Ok(Answer::Tree(tree)),
                    Seen::Changed(_) => {
                        Err(EndpointError::Unavailable("changes to a whole scan".into()))
                    }
                }
            }
            Request::ScanSince {
                ignore,
                ignore_vcs,
                since,
            } => Ok(Answer::Since(self.scan(ignore, ignore_vcs, since).await?)),
            Request::WaitChange { .. } => Err(EndpointError::Unavailable(
                "waiting for changes is not served here".into(),
            )),
            Request::Report(_) => Err(EndpointError::Unavailable(
                "reports are not taken here".into(),
            )),
            Request::Read { path, offset, len } => {
                let len = (len as usize).min(CHUNK);
                Ok(Answer::Bytes(
                    self.endpoint()?.read_range(&path, offset, len)?,
                ))
            }
            Request::Signature { path } => {
                Ok(Answer::Signature(self.endpoint()?.signature(&path).await?))
            }
            Request::Stage {
                path,
                offset,
                bytes,
            } => {
                let staged: usize = self.staged.values().map(Vec::len).sum();
                if staged + bytes.len() > MAX_STAGED {
                    self.staged.clear();
                    return Err(EndpointError::Refused(Refusal::new(
                        RefusalCode::TooLarge,
                        format!(
                            "more than {} MiB staged at once; files that large are not synced",
                            MAX_STAGED >> 20
                        ),
                    )));
                }
                let buffer = self.staged.entry(path.clone()).or_default();
                if offset != buffer.len() as u64 {
                    buffer.clear();
                    return Err(EndpointError::Stale(path));
                }
                buffer.extend_from_slice(&bytes);
                Ok(Answer::Done)
            }
            Request::Apply {
                change,
                mut contents,
            } => {
                for (path, _) in &change.desired {
                    if !contents.contains_key(path)
                        && let Some(bytes) = self.staged.remove(path)
                    {
                        contents.insert(path.clone(), Content::Whole(bytes));
                    }
                }
                let result = self.endpoint()?.apply(&change, contents).await;
                self.staged.clear();
                result.map(|()| Answer::Done)
            }
        }
    }
}

/// Sends a request to the serving side and brings back its answer. A clone carries requests
/// beside the original's, at the same time (a batch's changes travel together).
pub trait Carrier: Send + Clone {
    fn call(
        &mut self,
        request: Request,
    ) -> impl Future<Output = Result<Answer, EndpointError>> + Send;
}

/// A side reached through a [`Carrier`].
#[derive(Debug)]
pub struct RemoteEndpoint<C> {
    carrier: C,
    ignore: Vec<String>,
    ignore_vcs: bool,
}

impl<C: Carrier> RemoteEndpoint<C> {
    pub fn new(carrier: C, ignore: Vec<String>, ignore_vcs: bool) -> RemoteEndpoint<C> {
        RemoteEndpoint {
            carrier,
            ignore,
            ignore_vcs,
        }
    }

    async fn call(&mut self, request: Request) -> Result<Answer, EndpointError> {
        self.carrier.call(request).await?.into_result()
    }
}

impl<C: Carrier> RemoteEndpoint<C> {
    /// Waits until the other side has counted more than `seen` changes, or `within_ms`; gives
    /// its count.
    pub async fn wait_change(&mut self, seen: u64, within_ms: u32) -> Result<u64, EndpointError> {
        match self.call(Request::WaitChange { seen, within_ms }).await? {
            Answer::Changes(count) => Ok(count),
            other => Err(unexpected(&other)),
        }
    }
}

impl<C: Carrier> RemoteEndpoint<C> {
    /// Tells the other side what the session measured and where it stands. A side that cannot
    /// read a report refuses it with [`RefusalCode::NotUnderstood`].
    pub async fn report(&mut self, report: SessionReport) -> Result<(), EndpointError> {
        match self.call(Request::Report(report)).await? {
            Answer::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(answer: &Answer) -> EndpointError {
    EndpointError::Unavailable(format!("unexpected answer from the other side: {answer:?}"))
}

impl<C: Carrier> Endpoint for RemoteEndpoint<C> {
    async fn scan(&mut self, since: Option<Version>) -> Result<Since, EndpointError> {
        let request = Request::ScanSince {
            ignore: self.ignore.clone(),
            ignore_vcs: self.ignore_vcs,
            since,
        };
        match self.call(request).await? {
            Answer::Since(answer) => Ok(answer),
            other => Err(unexpected(&other)),
        }
    }

    async fn read(&mut self, path: &RelPath, digest: &Digest) -> Result<Vec<u8>, EndpointError> {
        let mut bytes = Vec::new();
        loop {
            let request = Request::Read {
                path: path.clone(),
                offset: bytes.len() as u64,
                len: CHUNK as u32,
            };
            let chunk = match self.call(request).await? {
                Answer::Bytes(chunk) => chunk,
                other => return Err(unexpected(&other)),
            };
            let last = chunk.len() < CHUNK;
            bytes.extend_from_slice(&chunk);
            if last {
                break;
            }
        }
        // The pieces must make the version that was planned, not a mix of two.
        checked(path, bytes, digest)
    }

    async fn signature(&mut self, path: &RelPath) -> Result<Signature, EndpointError> {
        match self.call(Request::Signature { path: path.clone() }).await? {
            Answer::Signature(signature) => Ok(signature),
            other => Err(unexpected(&other)),
        }
    }

    async fn apply(
        &mut self,
        change: &Change,
        mut contents: BTreeMap<RelPath, Content>,
    ) -> Result<(), EndpointError> {
        // Whole files go ahead in pieces, largest first, until what is left fits one message
        // (a directory of many files of a few MiB each would not).
        let mut whole: Vec<(usize, RelPath)> = contents
            .iter()
            .filter_map(|(p, c)| match c {
                Content::Whole(bytes) => Some((bytes.len(), p.clone())),
                Content::Delta { .. } => None,
            })
            .collect();
        whole.sort_unstable_by(|a, b| b.cmp(a));
        let mut left = carried(&contents);
        let mut large = Vec::new();
        for (len, path) in whole {
            if left <= CHUNK {
                break;
            }
            left -= len;
            large.push(path);
        }
        for path in large {
            if let Some(Content::Whole(bytes)) = contents.remove(&path) {
                for (index, piece) in bytes.chunks(CHUNK).enumerate() {
                    let request = Request::Stage {
                        path: path.clone(),
                        offset: (index * CHUNK) as u64,
                        bytes: piece.to_vec(),
                    };
                    self.call(request).await?;
                }
            }
        }
        apply_with(&mut self.carrier, change.clone(), contents).await
    }

    /// Changes whose content fits one message travel together, a request each, and the serving
    /// side applies them as they come. A change with more stages pieces first, and the serving
    /// side holds the pieces of one change at a time: those go alone, after.
    async fn apply_batch(
        &mut self,
        batch: Vec<(Change, BTreeMap<RelPath, Content>)>,
    ) -> Vec<(Change, Result<(), EndpointError>)> {
        let (together, alone): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .partition(|(_, contents)| carried(contents) <= CHUNK);
        let calls = together.into_iter().map(|(change, contents)| {
            let mut carrier = self.carrier.clone();
            async move {
                let outcome = apply_with(&mut carrier, change.clone(), contents).await;
                (change, outcome)
            }
        });
        let mut outcomes = futures_util::future::join_all(calls).await;
        for (change, contents) in alone {
            let outcome = self.apply(&change, contents).await;
            outcomes.push((change, outcome));
        }
        outcomes
    }
}

/// The bytes of file content a change's message would carry.
fn carried(contents: &BTreeMap<RelPath, Content>) -> usize {
    contents
        .values()
        .map(|content| match content {
            Content::Whole(bytes) => bytes.len(),
            Content::Delta { ops, .. } => crate::delta::literal_bytes(ops),
        })
        .sum()
}

/// One change applied on the serving side, with contents that fit one message.
async fn apply_with(
    carrier: &mut impl Carrier,
    change: Change,
    contents: BTreeMap<RelPath, Content>,
) -> Result<(), EndpointError> {
    match carrier
        .call(Request::Apply { change, contents })
        .await?
        .into_result()?
    {
        Answer::Done => Ok(()),
        other => Err(unexpected(&other)),
    }
}
