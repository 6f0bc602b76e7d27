//! A plugin's stdout and stderr: collected per call into a bounded buffer,
//! then written to the host log with the processor's name, at most
//! `LOG_LINES_PER_CALL_MAX` lines per call. Writes never fail, so a chatty
//! plugin is silenced, not crashed.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per call; the rest is counted and dropped.
const LOG_BUFFER_BYTES_MAX: usize = 16 * 1024;
/// Lines written to the host log per call.
const LOG_LINES_PER_CALL_MAX: usize = 20;

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped_bytes: usize,
}

#[derive(Clone, Default)]
pub struct LogPipe {
    buffer: Arc<Mutex<Buffer>>,
}

impl LogPipe {
    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = LOG_BUFFER_BYTES_MAX.saturating_sub(buffer.bytes.len());
        let kept = bytes.len().min(room);
        buffer.bytes.extend_from_slice(&bytes[..kept]);
        buffer.dropped_bytes += bytes.len() - kept;
    }

    /// Writes what the plugin printed since the last drain to the log.
    pub fn drain(&self, processor: &str, stream: &str) {
        let buffer = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        if buffer.bytes.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&buffer.bytes);
        let lines: Vec<&str> = text
            .lines()
            .filter(|line| !line.trim().is_empty())
            .collect();
        for line in lines.iter().take(LOG_LINES_PER_CALL_MAX) {
            tracing::info!(processor, stream, "plugin: {line}");
        }
        let suppressed = lines.len().saturating_sub(LOG_LINES_PER_CALL_MAX);
        if suppressed > 0 || buffer.dropped_bytes > 0 {
            tracing::warn!(
                processor,
                stream,
                suppressed_lines = suppressed,
                dropped_bytes = buffer.dropped_bytes,
                "plugin output rate-limited"
            );
        }
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for LogPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
