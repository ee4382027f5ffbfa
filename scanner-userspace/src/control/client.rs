//! The CLI's side of the control socket: one request, one answer.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;

use crate::control::{Request, Response};

/// How long a client waits for the daemon's answer.
const ANSWER_WITHIN_S: u64 = 10;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach the daemon at {path} (is `scanner run` running? is --socket right?)")]
    Unreachable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("permission denied on {0}: run as root or as a member of the socket's group")]
    Permission(PathBuf),
    #[error("the daemon did not answer within {0} s (busy, or stuck: see its log)")]
    Timeout(u64),
    #[error("talking to the daemon")]
    Io(#[from] std::io::Error),
    #[error("the daemon's answer is not valid: {0}")]
    BadAnswer(String),
    #[error("{0}")]
    Refused(String),
}

/// Sends one request and reads the daemon's result as `R`, a type of
/// [`reply`](crate::control::reply).
pub(crate) fn ask<R: serde::de::DeserializeOwned>(
    path: &Path,
    request: &Request,
) -> Result<R, ClientError> {
    let result = call(path, request)?;
    serde_json::from_value(result).map_err(|e| ClientError::BadAnswer(e.to_string()))
}

/// Sends one request and returns the daemon's result (or its error), as
/// any client would see it.
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
    stream.set_read_timeout(Some(Duration::from_secs(ANSWER_WITHIN_S)))?;
    let mut line =
        serde_json::to_vec(request).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut answer = String::new();
    BufReader::new(stream.take(1 << 24))
        .read_line(&mut answer)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ClientError::Timeout(ANSWER_WITHIN_S)
            }
            _ => ClientError::Io(e),
        })?;
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
