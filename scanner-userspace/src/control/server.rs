//! The daemon's side of the control socket: binding it safely, accepting
//! clients, and handing each request to the daemon's loop.

use std::{
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream as AsyncUnixStream},
    sync::{mpsc, oneshot},
};

use crate::control::{MAX_REQUEST, Request, Response, parse_request};

/// A client has this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A request on its way to the daemon's loop, with where to send the answer.
pub(crate) type Call = (Request, oneshot::Sender<Response>);
/// Accepts clients on `listener`; each request goes to `calls`.
pub(crate) async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let calls = calls.clone();
                tokio::spawn(async move {
                    if let Err(e) = client(stream, calls).await {
                        tracing::debug!("control client: {e}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("control socket accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn client(stream: AsyncUnixStream, calls: mpsc::Sender<Call>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    // One byte more than allowed tells an oversized request from a full one.
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    let response =
        match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut line)).await {
            Err(_) => Response::error("timed out waiting for the request"),
            Ok(Err(e)) => Response::error(format!("reading the request: {e}")),
            Ok(Ok(_)) => match parse_request(&line) {
                Err(e) => Response::error(e),
                Ok(request) => {
                    let (tx, rx) = oneshot::channel();
                    if calls.send((request, tx)).await.is_err() {
                        Response::error("the daemon is stopping")
                    } else {
                        rx.await
                            .unwrap_or_else(|_| Response::error("the daemon is stopping"))
                    }
                }
            },
        };
    let mut bytes = serde_json::to_vec(&response).unwrap_or_default();
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    write.shutdown().await?;
    // Closing with unread input would reset the connection before the client
    // reads the answer (an oversized request): discard the rest, bounded.
    let mut rest = reader.into_inner().into_inner().take(1 << 20);
    let _ = tokio::time::timeout(
        READ_TIMEOUT,
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
    Ok(())
}

#[derive(Debug, Error)]
pub(crate) enum SocketError {
    #[error("cannot create {dir}")]
    Dir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("another daemon is already listening on {0}")]
    InUse(PathBuf),
    #[error("cannot listen on {path}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("cannot set owner or mode of {path}")]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Binds the socket with mode 0660, owned by root and `group` (if given).
/// A stale socket file from a crashed daemon is replaced; a live one is not.
pub(crate) fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, SocketError> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| SocketError::Dir {
            dir: dir.to_path_buf(),
            source,
        })?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(SocketError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|source| SocketError::Bind {
        path: path.to_path_buf(),
        source,
    })?;
    let perms = |source| SocketError::Permissions {
        path: path.to_path_buf(),
        source,
    };
    let gid = match group {
        Some(name) => Some(
            nix::unistd::Group::from_name(name)
                .ok()
                .flatten()
                .ok_or_else(|| SocketError::UnknownGroup(name.to_owned()))?
                .gid,
        ),
        None => None,
    };
    nix::unistd::chown(path, Some(nix::unistd::Uid::from_raw(0)), gid)
        .map_err(|e| perms(std::io::Error::from(e)))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(perms)?;
    Ok(listener)
}
