//! The Local API over HTTP: the bouncer's decision stream, the machine's
//! login, alert pushes. Every request is bounded in time, so a slow or
//! hung Local API costs a retry, never a stall.

use std::{path::Path, time::Duration};

use serde::Deserialize;
use thiserror::Error;

use crate::fleet::decision::Stream;

/// The longest any one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub(crate) enum LapiError {
    /// 401/403: a wrong key or password. Retrying does not help.
    #[error("the CrowdSec Local API at {url} refused {what} ({status}: {message})")]
    Refused {
        url: String,
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error("the CrowdSec Local API at {url} answered {status} to {what}: {message}")]
    Status {
        url: String,
        what: &'static str,
        status: u16,
        message: String,
    },
    #[error(
        "the CrowdSec Local API at {url} sent an answer to {what} that is not what it should be"
    )]
    Decode {
        url: String,
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot reach the CrowdSec Local API at {url} ({what})")]
    Unreachable {
        url: String,
        what: &'static str,
        #[source]
        source: reqwest::Error,
    },
    #[error("reading the CA file {path}")]
    CaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the CA file {path} holds no usable certificate")]
    BadCa {
        path: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the CA file {path} holds no PEM certificate")]
    NoCa { path: String },
    #[error("setting up the HTTP client")]
    Client(#[source] reqwest::Error),
}

impl LapiError {
    /// A wrong credential: retrying cannot help.
    pub(crate) fn is_refused(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }

    /// A request the Local API will never take (4xx other than auth,
    /// timeout and rate limit): sending it again cannot help.
    pub(crate) fn is_rejected(&self) -> bool {
        matches!(self, Self::Status { status, .. } if (400..500).contains(status) && *status != 408 && *status != 429)
    }

    /// A wrong setting rather than a passing fault.
    pub(crate) fn is_usage(&self) -> bool {
        matches!(
            self,
            Self::Refused { .. } | Self::CaFile { .. } | Self::BadCa { .. } | Self::NoCa { .. }
        )
    }
}

/// A login's answer: the JWT and when it expires.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Login {
    pub(crate) token: String,
    /// RFC 3339.
    pub(crate) expire: String,
}

/// A client of one Local API.
#[derive(Debug, Clone)]
pub(crate) struct Lapi {
    http: reqwest::Client,
    /// The base URL, ending in `/`.
    base: String,
}

impl Lapi {
    pub(crate) fn new(url: &str, ca_file: Option<&Path>) -> Result<Self, LapiError> {
        let mut builder = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("scanner/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let shown = path.display().to_string();
            let pem = std::fs::read(path).map_err(|source| LapiError::CaFile {
                path: shown.clone(),
                source,
            })?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| LapiError::BadCa {
                    path: shown.clone(),
                    source,
                })?;
            // A DER file or a key parses to nothing: say so, rather than
            // fall back to the system's CAs and fail later.
            if certs.is_empty() {
                return Err(LapiError::NoCa { path: shown });
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let base = if url.ends_with('/') {
            url.to_owned()
        } else {
            format!("{url}/")
        };
        Ok(Self {
            http: builder.build().map_err(LapiError::Client)?,
            base,
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// One pull of the decision stream: everything active with `startup`,
    /// else what changed since the last pull.
    pub(crate) async fn stream(&self, key: &str, startup: bool) -> Result<Stream, LapiError> {
        let what = "the bouncer's decision stream";
        let url = format!("{}v1/decisions/stream?startup={startup}", self.base);
        let request = self.http.get(url).header("X-Api-Key", key);
        self.json(request, what).await
    }

    /// Logs in as a machine.
    pub(crate) async fn login(&self, machine_id: &str, password: &str) -> Result<Login, LapiError> {
        let what = "the machine's login";
        let body = serde_json::json!({
            "machine_id": machine_id,
            "password": password,
            "scenarios": [crate::fleet::alert::PORT_SCAN, crate::fleet::alert::DISTRIBUTED_SCAN],
        });
        let request = self
            .http
            .post(format!("{}v1/watchers/login", self.base))
            .json(&body);
        self.json(request, what).await
    }

    /// Pushes alerts (each as [`Alert`] serialises it); the Local API
    /// answers with their ids.
    pub(crate) async fn push(
        &self,
        token: &str,
        alerts: &[&serde_json::Value],
    ) -> Result<Vec<String>, LapiError> {
        let what = "an alert push";
        let request = self
            .http
            .post(format!("{}v1/alerts", self.base))
            .bearer_auth(token)
            .json(alerts);
        self.json(request, what).await
    }

    /// The alerts the Local API holds about one source (`scope` Ip or
    /// Range, and its value), with their events: what a machine may read.
    pub(crate) async fn alerts_about(
        &self,
        token: &str,
        scope: &str,
        value: &str,
    ) -> Result<Vec<serde_json::Value>, LapiError> {
        let what = "a look-up of alerts already pushed";
        let request = self
            .http
            .get(format!("{}v1/alerts", self.base))
            .bearer_auth(token)
            .query(&[("scope", scope), ("value", value), ("limit", "1000")]);
        // An empty answer is `null`.
        let found: Option<Vec<serde_json::Value>> = self.json(request, what).await?;
        Ok(found.unwrap_or_default())
    }

    async fn json<T: for<'de> Deserialize<'de>>(
        &self,
        request: reqwest::RequestBuilder,
        what: &'static str,
    ) -> Result<T, LapiError> {
        let unreachable = |source| LapiError::Unreachable {
            url: self.base.clone(),
            what,
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status().as_u16();
        if response.status().is_success() {
            return response.json().await.map_err(|source| LapiError::Decode {
                url: self.base.clone(),
                what,
                source,
            });
        }
        let body = response.text().await.unwrap_or_default();
        // {"message": ...} or {"code": .., "message": ...}
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(body)
            .chars()
            .take(200)
            .collect();
        let url = self.base.clone();
        Err(if status == 401 || status == 403 {
            LapiError::Refused {
                url,
                what,
                status,
                message,
            }
        } else {
            LapiError::Status {
                url,
                what,
                status,
                message,
            }
        })
    }
}
