//! The agent's control socket: `state_dir/jailer.sock`, root-only (0600).
//! One JSON request per connection, one JSON response back. `status`,
//! `reload` and the metrics endpoint go through here, so they are answered by
//! the agent's own loop from its own state, without locks.

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt},
    net::UnixListener,
    sync::{mpsc, oneshot},
};
use tracing::warn;

use super::{fleet::FleetReport, status::Status};
use crate::state::StateError;

pub const SOCKET: &str = "jailer.sock";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Reload,
    Metrics,
    /// `jailer ban`/`unban` appended to the journal: read it now.
    JournalChanged,
    /// `jailer fleet`.
    Fleet,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Response {
    Status {
        status: Status,
    },
    Reloaded {
        jails: Vec<String>,
    },
    Metrics {
        text: String,
    },
    /// Journal records taken in.
    JournalRead {
        records: usize,
    },
    Fleet {
        report: FleetReport,
    },
    Error {
        message: String,
    },
}

/// A request and where its answer goes.
pub type Call = (Request, oneshot::Sender<Response>);

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET)
}

/// Asks the running agent; `Ok(None)` when no agent listens.
pub fn ask(state_dir: &Path, request: &Request) -> Result<Option<Response>, StateError> {
    let path = socket_path(state_dir);
    let io = |source| StateError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = match UnixStream::connect(&path) {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io(e)),
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_string(request).expect("requests serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(io)?;
    serde_json::from_str(&reply)
        .map(Some)
        .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Binds the socket, root-only. The caller holds the state directory's
/// agent lock, so a socket already there is a stale one.
pub fn bind(state_dir: &Path) -> Result<UnixListener, StateError> {
    let path = socket_path(state_dir);
    let io = |source| StateError::Io {
        path: path.clone(),
        source,
    };
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Accepts connections and forwards each request to the agent loop.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors and the like: back off, never spin.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let calls = calls.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = tokio::io::BufReader::new(read);
            let read =
                tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
            let response = match read.map(|r| r.map(|_| serde_json::from_str::<Request>(&line))) {
                Ok(Ok(Ok(request))) => {
                    let (tx, rx) = oneshot::channel();
                    if calls.send((request, tx)).await.is_err() {
                        return;
                    }
                    rx.await.unwrap_or(Response::Error {
                        message: "agent shutting down".into(),
                    })
                }
                Ok(Ok(Err(e))) => Response::Error {
                    message: format!("bad request: {e}"),
                },
                _ => return,
            };
            let mut out = serde_json::to_string(&response).expect("responses serialize");
            out.push('\n');
            if let Err(e) = write.write_all(out.as_bytes()).await {
                warn!(error = %e, "control socket write failed");
            }
        });
    }
}
