//! A minimal Kinesis API client: SigV4-signed JSON requests over one
//! keep-alive HTTP/1.1 connection, plain or TLS. For the Kinesis sink
//! and for Weir's own benchmark and tests, which need a load generator
//! cheaper than an AWS SDK (requests can be built and signed before the
//! clock starts); not a general client.

use std::net::SocketAddr;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::sigv4;
use crate::storage::now_ms;

/// Where to send requests and how to sign them.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `HOST[:PORT]` as the endpoint's URL names it: the `host` header
    /// (signed) and, with TLS, the name the certificate must carry.
    pub authority: String,
    /// TLS, or plain HTTP without.
    pub tls: Option<TlsConnector>,
    pub access_key: String,
    pub secret: String,
    /// The region in the signature's credential scope.
    pub region: String,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("talking to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS to {addr}: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("signing the request: {0}")]
    Sign(String),
    #[error("the answer from {addr} is not HTTP/1.1 this client reads: {reason}")]
    Answer { addr: SocketAddr, reason: String },
}

impl Target {
    /// A plain-HTTP endpoint at `addr`.
    pub fn plain(addr: SocketAddr, access_key: String, secret: String, region: &str) -> Self {
        Self {
            addr,
            authority: addr.to_string(),
            tls: None,
            access_key,
            secret,
            region: region.to_owned(),
        }
    }

    /// A signed HTTP/1.1 request for `operation` with a JSON `body`, ready
    /// to write (valid for the server's clock-skew allowance).
    pub fn request(&self, operation: &str, body: &str) -> Result<Vec<u8>, ClientError> {
        let sign_error = |e: &dyn std::fmt::Display| ClientError::Sign(e.to_string());
        let date = sigv4::format_amz_date(now_ms());
        let target = format!("Kinesis_20131202.{operation}");
        let mut headers = http::HeaderMap::new();
        for (name, value) in [
            ("host", self.authority.clone()),
            ("x-amz-date", date.clone()),
            ("x-amz-target", target.clone()),
        ] {
            let value = http::HeaderValue::from_str(&value).map_err(|e| sign_error(&e))?;
            headers.insert(name, value);
        }
        let parts = sigv4::SignedParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            authority: None,
            body: body.as_bytes(),
        };
        let authorization = sigv4::authorization_header(
            &parts,
            &["host", "x-amz-date", "x-amz-target"],
            &self.access_key,
            &self.secret,
            &self.region,
        )
        .map_err(|e| sign_error(&e))?;
        let mut request = format!(
            "POST / HTTP/1.1\r\nhost: {}\r\ncontent-type: application/x-amz-json-1.1\r\n\
             x-amz-target: {target}\r\nx-amz-date: {date}\r\n\
             authorization: {authorization}\r\ncontent-length: {}\r\n\r\n",
            self.authority,
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(body.as_bytes());
        Ok(request)
    }
}

/// A byte stream to the endpoint: TCP, or TLS over TCP.
trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> ByteStream for T {}

/// One keep-alive HTTP/1.1 connection: a request out, its answer in.
pub struct Connection {
    target: Target,
    stream: Box<dyn ByteStream>,
    buffer: Vec<u8>,
}

impl Connection {
    pub async fn open(target: &Target) -> Result<Self, ClientError> {
        let io = |source| ClientError::Io {
            addr: target.addr,
            source,
        };
        let tcp = TcpStream::connect(target.addr).await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let stream: Box<dyn ByteStream> = match &target.tls {
            None => Box::new(tcp),
            Some(connector) => {
                let tls_error = |reason: String| ClientError::Tls {
                    addr: target.addr,
                    reason,
                };
                let host = host_of(&target.authority);
                let name = ServerName::try_from(host.to_owned())
                    .map_err(|e| tls_error(format!("{host:?} is not a server name: {e}")))?;
                let tls = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| tls_error(e.to_string()))?;
                Box::new(tls)
            }
        };
        Ok(Self {
            target: target.clone(),
            stream,
            buffer: Vec::new(),
        })
    }

    /// Signs and sends `operation` with a JSON `body`; the status and body.
    pub async fn call(
        &mut self,
        operation: &str,
        body: &str,
    ) -> Result<(u16, Vec<u8>), ClientError> {
        let request = self.target.request(operation, body)?;
        self.send(&request).await
    }

    /// Writes a prepared request and reads the status and body.
    pub async fn send(&mut self, request: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
        let addr = self.target.addr;
        self.stream
            .write_all(request)
            .await
            .map_err(|source| ClientError::Io { addr, source })?;
        let header_end = loop {
            if let Some(end) = find(&self.buffer, b"\r\n\r\n") {
                break end + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buffer[..header_end]).to_ascii_lowercase();
        let answer = |reason: &str| ClientError::Answer {
            addr,
            reason: reason.to_owned(),
        };
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| answer("no status line"))?;
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| answer("no content-length"))?;
        while self.buffer.len() < header_end + length {
            self.fill().await?;
        }
        let body = self.buffer[header_end..header_end + length].to_vec();
        self.buffer.drain(..header_end + length);
        Ok((status, body))
    }

    async fn fill(&mut self) -> Result<(), ClientError> {
        let addr = self.target.addr;
        let mut chunk = [0u8; 64 * 1024];
        let read = self
            .stream
            .read(&mut chunk)
            .await
            .map_err(|source| ClientError::Io { addr, source })?;
        if read == 0 {
            return Err(ClientError::Answer {
                addr,
                reason: "the server closed the connection".into(),
            });
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(())
    }
}

/// The host of `HOST[:PORT]` (`[V6][:PORT]` too).
pub fn host_of(authority: &str) -> &str {
    match authority.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => authority.split(':').next().unwrap_or(authority),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn the_server_name_is_the_authority_without_its_port() {
        assert_eq!(
            host_of("kinesis.eu-west-1.amazonaws.com"),
            "kinesis.eu-west-1.amazonaws.com"
        );
        assert_eq!(host_of("localhost:4567"), "localhost");
        assert_eq!(host_of("127.0.0.1:4567"), "127.0.0.1");
        assert_eq!(host_of("[::1]:4567"), "::1");
        assert_eq!(host_of("[::1]"), "::1");
    }
}
