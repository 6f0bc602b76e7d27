//! What a plugin logs: `host.log` lines and its stdout and stderr, written
//! to the host log with the processor's name, at most
//! `plugin_log_lines_per_sec` lines per second per processor (a token
//! bucket; what is dropped is counted and reported), with control
//! characters escaped so a plugin cannot forge log lines. Writes never
//! fail, so a chatty plugin is silenced, not crashed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Stdout and stderr bytes kept per call; the rest is counted and dropped.
const LOG_BUFFER_BYTES_MAX: usize = 16 * 1024;
/// Characters of one log line; the rest is cut.
const LOG_LINE_CHARS_MAX: usize = 1024;

/// One processor's log: shared by its instances (one per shard).
#[derive(Clone)]
pub struct PluginLog(Arc<LogInner>);

struct LogInner {
    processor: String,
    lines_per_sec: u64,
    bucket: Mutex<LogBucket>,
    dropped_lines: AtomicU64,
}

struct LogBucket {
    tokens: f64,
    refilled: Instant,
    /// Dropped since the last line that got through, reported with it.
    dropped_since: u64,
}

impl PluginLog {
    pub fn new(processor: &str, lines_per_sec: u64) -> Self {
        Self(Arc::new(LogInner {
            processor: processor.to_owned(),
            lines_per_sec,
            bucket: Mutex::new(LogBucket {
                tokens: lines_per_sec as f64,
                refilled: Instant::now(),
                dropped_since: 0,
            }),
            dropped_lines: AtomicU64::new(0),
        }))
    }

    /// Lines dropped by the rate limit since the processor started.
    pub fn dropped_lines(&self) -> u64 {
        self.0.dropped_lines.load(Ordering::Relaxed)
    }

    /// Writes one line at `level`, if the rate allows.
    pub fn line(&self, level: tracing::Level, source: &str, message: &str) {
        let inner = &self.0;
        let dropped_before = {
            let mut bucket = inner.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let rate = inner.lines_per_sec as f64;
            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * rate).min(rate.max(1.0));
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                bucket.dropped_since += 1;
                inner.dropped_lines.fetch_add(1, Ordering::Relaxed);
                return;
            }
            bucket.tokens -= 1.0;
            std::mem::take(&mut bucket.dropped_since)
        };
        let processor = inner.processor.as_str();
        if dropped_before > 0 {
            tracing::warn!(
                processor,
                dropped_lines = dropped_before,
                "plugin log rate-limited (plugin_log_lines_per_sec)"
            );
        }
        let text = escape(message);
        match level {
            tracing::Level::ERROR => tracing::error!(processor, source, "plugin: {text}"),
            tracing::Level::WARN => tracing::warn!(processor, source, "plugin: {text}"),
            tracing::Level::INFO => tracing::info!(processor, source, "plugin: {text}"),
            _ => tracing::debug!(processor, source, "plugin: {text}"),
        }
    }
}

/// The message cut to `LOG_LINE_CHARS_MAX` characters, control characters
/// (newlines, escape sequences) written as `\u{..}`.
fn escape(message: &str) -> String {
    let mut text = String::with_capacity(message.len().min(LOG_LINE_CHARS_MAX));
    for c in message.chars().take(LOG_LINE_CHARS_MAX) {
        if c.is_control() {
            text.extend(c.escape_unicode());
        } else {
            text.push(c);
        }
    }
    text
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped_bytes: usize,
}

/// A plugin's stdout and stderr: collected per call into a bounded
/// buffer, then written line by line to its [`PluginLog`].
#[derive(Clone)]
pub struct LogPipe {
    buffer: Arc<Mutex<Buffer>>,
    log: PluginLog,
}

impl LogPipe {
    pub fn new(log: PluginLog) -> Self {
        Self {
            buffer: Arc::default(),
            log,
        }
    }

    fn append(&self, bytes: &[u8]) {
        let mut buffer = self.buffer.lock().unwrap_or_else(|p| p.into_inner());
        let room = LOG_BUFFER_BYTES_MAX.saturating_sub(buffer.bytes.len());
        let kept = bytes.len().min(room);
        buffer.bytes.extend_from_slice(&bytes[..kept]);
        buffer.dropped_bytes += bytes.len() - kept;
    }

    /// Writes what the plugin printed since the last drain to the log.
    pub fn drain(&self) {
        let buffer = std::mem::take(&mut *self.buffer.lock().unwrap_or_else(|p| p.into_inner()));
        let text = String::from_utf8_lossy(&buffer.bytes);
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            self.log.line(tracing::Level::INFO, "stdout", line);
        }
        if buffer.dropped_bytes > 0 {
            tracing::warn!(
                processor = self.log.0.processor,
                dropped_bytes = buffer.dropped_bytes,
                "plugin printed more than {LOG_BUFFER_BYTES_MAX} bytes in one call; the rest was dropped"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_rate_are_counted_not_written() {
        let log = PluginLog::new("spammer", 10);
        for _ in 0..1_000 {
            log.line(tracing::Level::INFO, "host.log", "hello");
        }
        let dropped = log.dropped_lines();
        assert!((985..=990).contains(&dropped), "dropped {dropped}");
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let escaped = escape("ok\nERROR forged\x1b[31m");
        assert!(!escaped.chars().any(char::is_control), "{escaped}");
        assert!(escaped.contains("ERROR forged"));
        assert_eq!(escape(&"x".repeat(5_000)).len(), LOG_LINE_CHARS_MAX);
    }
}
