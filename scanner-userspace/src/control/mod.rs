//! The control socket: one JSON request per line, one JSON response per
//! line, over a Unix socket only root and one group may open.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream as AsyncUnixStream},
    sync::{mpsc, oneshot},
};

/// Where the daemon listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/scanner/scanner.sock";
/// Longest request accepted, newline included.
pub const MAX_REQUEST: usize = 4096;
/// A client has this long to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    // Empty struct variants, not unit ones: serde ignores unknown fields
    // next to a unit variant's tag, and requests must be exact.
    Status {},
    List {},
    Block {
        target: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ttl: Option<String>,
    },
    Unblock {
        target: String,
    },
    Allow {
        target: String,
    },
    Disallow {
        target: String,
    },
    /// Every allowlist entry and its origin (`scanner allow --list`).
    Allowlist {},
    /// Probes per destination port (`scanner ports`, `scanner top`), most
    /// probed first; all of them, or the first `limit`.
    PortHits {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// The latest events, oldest first (`scanner top`).
    Events {},
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
}

impl Response {
    pub fn ok(result: serde_json::Value) -> Self {
        Self {
            ok: true,
            error: None,
            result,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            result: serde_json::Value::Null,
        }
    }
}

/// Parses one request line; the error is what the client is told.
pub fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request too large (limit {MAX_REQUEST} bytes)"));
    }
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
}

/// A request on its way to the daemon's loop, with where to send the answer.
pub type Call = (Request, oneshot::Sender<Response>);

/// Accepts clients on `listener`; each request goes to `calls`.
pub async fn serve(listener: UnixListener, calls: mpsc::Sender<Call>) {
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
pub enum SocketError {
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
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, SocketError> {
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

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the daemon at {path} (is `scanner run` running? is --socket right?)")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied on {0}: run as root or as a member of the socket's group")]
    Permission(PathBuf),
    #[error("talking to the daemon")]
    Io(#[from] std::io::Error),
    #[error("the daemon's answer is not valid: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and returns the daemon's result (or its error).
pub fn call(path: &Path, request: &Request) -> Result<serde_json::Value, ClientError> {
    let mut stream = UnixStream::connect(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::PermissionDenied {
            ClientError::Permission(path.to_path_buf())
        } else {
            ClientError::Unreachable {
                path: path.to_path_buf(),
                source,
            }
        }
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream.take(1 << 24)).read_line(&mut answer)?;
    let response: Response = serde_json::from_str(&answer)
        .map_err(|e| ClientError::BadAnswer(format!("{e}: {answer:?}")))?;
    if response.ok {
        Ok(response.result)
    } else {
        Err(ClientError::Refused(
            response.error.unwrap_or_else(|| "refused".into()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_nonsense_is_refused() {
        let r = parse_request(br#"{"cmd":"block","target":"198.18.0.1","ttl":"2h"}"#).unwrap();
        assert_eq!(
            r,
            Request::Block {
                target: "198.18.0.1".into(),
                ttl: Some("2h".into())
            }
        );
        assert_eq!(
            parse_request(br#"{"cmd":"status"}"#),
            Ok(Request::Status {})
        );
        for bad in [
            &b"not json"[..],
            br#"{"cmd":"format_disk"}"#,
            br#"{"cmd":"block"}"#,
            br#"{"cmd":"status","extra":1}"#,
            b"",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
        let big = vec![b' '; MAX_REQUEST + 1];
        assert!(parse_request(&big).is_err_and(|e| e.contains("too large")));
    }

    #[test]
    fn responses_serialise_compactly() {
        let ok = serde_json::to_string(&Response::ok(serde_json::json!({"blocks": 1}))).unwrap();
        assert_eq!(ok, r#"{"ok":true,"result":{"blocks":1}}"#);
        let err = serde_json::to_string(&Response::error("no")).unwrap();
        assert_eq!(err, r#"{"ok":false,"error":"no"}"#);
    }
}
