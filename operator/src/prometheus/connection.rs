//! How the operator reaches its own Prometheus when that Prometheus sits behind TLS and
//! authentication: a CA bundle to trust, a client certificate (mTLS), extra headers (a tenant
//! such as Mimir's, Cortex' and Thanos' `X-Scope-OrgID`) and a bearer token read from a file
//! and read again when the file changes (a rotated Secret or a projected ServiceAccount token).
//! None of it is ever sent to a service's own `signals.prometheus.url`, which whoever writes
//! the InvoiceService chooses. Reads files; no network.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
    time::SystemTime,
};

use prometheus_http_query::reqwest::{
    self,
    header::{HeaderMap, HeaderName, HeaderValue},
};

use super::Error;

/// Everything about the connection to the operator-wide Prometheus beyond its URL.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connection {
    /// PEM bundle of the CAs that sign Prometheus' serving certificate, trusted beside the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to Prometheus; needs [`Self::client_key`].
    pub client_certificate: Option<PathBuf>,
    /// PEM private key of [`Self::client_certificate`].
    pub client_key: Option<PathBuf>,
    /// Headers sent with every query, as `(name, value)`.
    pub headers: Vec<(String, String)>,
    /// File holding a bearer token; read again whenever it changes.
    pub token_file: Option<PathBuf>,
}

impl Connection {
    /// Whether anything beyond a plain HTTP client is asked for.
    pub fn is_plain(&self) -> bool {
        self == &Self::default()
    }

    /// The HTTP client for this connection: the CA bundle trusted, the client identity
    /// presented and the headers sent by default; `timeouts` sets the connect and request
    /// timeouts. Every file is read now, so a missing or malformed one fails at startup with
    /// its path, not at the first query.
    pub(super) fn http_client(
        &self,
        timeouts: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, Error> {
        let mut builder = timeouts(reqwest::Client::builder());
        if let Some(path) = &self.ca_file {
            let pem = read(path)?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                Error::Certificate {
                    path: path.clone(),
                    source,
                }
            })?;
            if certificates.is_empty() {
                return Err(Error::NoCertificate { path: path.clone() });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        match (&self.client_certificate, &self.client_key) {
            (None, None) => {}
            (Some(certificate), Some(key)) => {
                let mut pem = read(certificate)?;
                pem.push(b'\n');
                pem.extend(read(key)?);
                let identity =
                    reqwest::Identity::from_pem(&pem).map_err(|source| Error::Certificate {
                        path: certificate.clone(),
                        source,
                    })?;
                builder = builder.identity(identity);
            }
            (Some(_), None) | (None, Some(_)) => return Err(Error::HalfAClientIdentity),
        }
        builder = builder.default_headers(header_map(&self.headers)?);
        builder.build().map_err(Error::BuildHttpClient)
    }
}

/// The headers as a map; a name or value HTTP cannot carry is refused with its name.
pub fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let invalid = || Error::InvalidHeader { name: name.clone() };
        let header_name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        if header_name == reqwest::header::AUTHORIZATION {
            return Err(Error::AuthorizationHeader);
        }
        let mut header_value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        header_value.set_sensitive(true);
        map.append(header_name, header_value);
    }
    Ok(map)
}

/// Parses `NAME=VALUE` (the `--prometheus-header` flag); the value may contain `=`.
pub fn parse_header(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=VALUE, got {text:?}"))?;
    let name = name.trim();
    if HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("{name:?} is not an HTTP header name"));
    }
    if HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "the value of {name} is not a valid HTTP header value"
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })
}

/// The bearer token sent to the operator-wide Prometheus.
#[derive(Debug)]
pub enum Token {
    /// Given once.
    Fixed(HeaderValue),
    /// Read from a file, again whenever it changes.
    File(TokenFile),
}

impl Token {
    /// The `Authorization` header value now.
    pub fn header(&self) -> HeaderValue {
        match self {
            Self::Fixed(value) => value.clone(),
            Self::File(file) => file.header(),
        }
    }
}

/// `Bearer <token>` as a sensitive header value.
pub fn bearer(token: &str) -> Result<HeaderValue, Error> {
    let mut value =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::InvalidToken)?;
    value.set_sensitive(true);
    Ok(value)
}

/// A bearer token in a file. Each use looks at the file's modification time and length (one
/// `stat`), and reads it again when either changed: Kubernetes swaps a Secret's or a projected
/// token's file atomically, so a rotated token is used from the next query on. A file that
/// cannot be read or holds no valid token keeps the last good token (with a warning), rather
/// than sending none.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    current: Mutex<Read>,
}

#[derive(Debug)]
struct Read {
    stamp: Option<(SystemTime, u64)>,
    value: HeaderValue,
}

impl TokenFile {
    /// Reads the token at `path` now; a missing, empty or invalid token is an error here.
    pub fn open(path: &Path) -> Result<Self, Error> {
        let (stamp, value) = read_token(path)?;
        Ok(Self {
            path: path.to_owned(),
            current: Mutex::new(Read { stamp, value }),
        })
    }

    /// The `Authorization` header value, read again if the file changed.
    pub fn header(&self) -> HeaderValue {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let stamp = stamp(&self.path);
        if stamp.is_some() && stamp != current.stamp {
            match read_token(&self.path) {
                Ok((stamp, value)) => {
                    if value != current.value {
                        tracing::info!(path = %self.path.display(), "prometheus token file changed; using the new token");
                    }
                    *current = Read { stamp, value };
                }
                Err(error) => {
                    tracing::warn!(path = %self.path.display(), %error, "cannot read the new prometheus token; keeping the last one");
                    current.stamp = stamp;
                }
            }
        }
        current.value.clone()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn read_token(path: &Path) -> Result<(Option<(SystemTime, u64)>, HeaderValue), Error> {
    let stamp = stamp(path);
    let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::EmptyToken {
            path: path.to_owned(),
        });
    }
    Ok((stamp, bearer(token)?))
}

#[cfg(test)]
mod tests;
