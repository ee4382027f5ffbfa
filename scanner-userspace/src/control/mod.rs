//! The control socket's protocol: one JSON request per line, one JSON
//! response per line, over a Unix socket only root and one group may open.
//! The daemon serves it ([`server`]); the CLI calls it ([`client`]).

pub(crate) mod client;
pub(crate) mod reply;
pub(crate) mod server;

pub(crate) use client::{ask, call};
use serde::{Deserialize, Serialize};

/// Where the daemon listens unless told otherwise.
pub(crate) const DEFAULT_SOCKET: &str = "/run/scanner/scanner.sock";
/// Longest request accepted, newline included.
pub(crate) const MAX_REQUEST: usize = 4096;

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
        /// Block it even where it covers a protected gateway, resolver or
        /// established peer (which the kernel otherwise never drops).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        force: bool,
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
pub(crate) struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub result: serde_json::Value,
}

impl Response {
    /// A reply (one of [`reply`]'s types). Its keys go out sorted: a
    /// `Value` is a sorted map.
    pub(crate) fn ok(result: impl Serialize) -> Self {
        match serde_json::to_value(result) {
            Ok(result) => Self {
                ok: true,
                error: None,
                result,
            },
            Err(e) => Self::error(format!("encoding the reply: {e}")),
        }
    }

    pub(crate) fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            result: serde_json::Value::Null,
        }
    }
}

/// Parses one request line; the error is what the client is told.
pub(crate) fn parse_request(line: &[u8]) -> Result<Request, String> {
    if line.len() > MAX_REQUEST {
        return Err(format!("request too large (limit {MAX_REQUEST} bytes)"));
    }
    serde_json::from_slice(line).map_err(|e| format!("malformed request: {e}"))
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
                ttl: Some("2h".into()),
                force: false,
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
