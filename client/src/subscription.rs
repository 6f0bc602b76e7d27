//! Live feeds: one shard ([`Subscription`]) or every shard of a stream
//! ([`StreamSubscription`]), each a [`futures_core::Stream`] of batches.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use futures_core::Stream;
use weir_proto::{RecordBatch, Response};

use crate::ClientError;
use crate::connection::{closed, take_response, unexpected};

/// Room made in a subscription's buffer before each read from its stream.
const READ_BYTES_MIN: usize = 64 * 1024;

/// A live feed of records from one shard, from [`crate::Client::subscribe`].
///
/// Read it with [`Subscription::next`], or as a [`Stream`] of batches
/// (which ends after its first error). Records arrive as they are
/// committed; while nobody reads, QUIC flow control holds the feed back
/// on the server. Dropping it ends the feed on the server at once.
#[derive(Debug)]
pub struct Subscription {
    _send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
    frame_bytes_max: usize,
    start_sequence: u64,
    /// The feed failed or ended; as a `Stream` it yields nothing more.
    ended: bool,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        // Tell the server at once, so it frees the subscription's place.
        let _ = self.recv.stop(0u32.into());
    }
}

impl Subscription {
    pub(crate) fn new(
        send: quinn::SendStream,
        recv: quinn::RecvStream,
        frame_bytes_max: usize,
    ) -> Self {
        Self {
            _send: send,
            recv,
            buf: BytesMut::new(),
            frame_bytes_max,
            start_sequence: 0,
            ended: false,
        }
    }

    /// Waits for the server's confirmation: an empty batch naming where
    /// the feed starts, so records committed after it are sure to arrive.
    pub(crate) async fn confirmed(mut self) -> Result<Self, ClientError> {
        self.start_sequence = self.next().await?.next_sequence;
        Ok(self)
    }

    /// The sequence number the feed started at.
    pub fn start_sequence(&self) -> u64 {
        self.start_sequence
    }

    /// The next batch of records; waits until there is one.
    pub async fn next(&mut self) -> Result<RecordBatch, ClientError> {
        std::future::poll_fn(|cx| self.poll_batch(cx)).await
    }

    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<RecordBatch, ClientError>> {
        loop {
            match take_response(&mut self.buf, self.frame_bytes_max)? {
                Some(Response::Records(batch)) => return Poll::Ready(Ok(batch)),
                Some(other) => return Poll::Ready(Err(unexpected(&other))),
                None => {}
            }
            self.buf.reserve(READ_BYTES_MIN);
            let read = tokio_util::io::poll_read_buf(Pin::new(&mut self.recv), cx, &mut self.buf);
            match ready!(read) {
                Ok(0) => {
                    return Poll::Ready(Err(ClientError::Connection(
                        "the server ended the subscription".into(),
                    )));
                }
                Ok(_) => {}
                Err(error) => return Poll::Ready(Err(read_error(error))),
            }
        }
    }
}

/// A read error from quinn through `AsyncRead`, with the server's reason
/// when it closed the connection.
fn read_error(error: std::io::Error) -> ClientError {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<quinn::ReadError>())
    {
        Some(quinn::ReadError::ConnectionLost(lost)) => closed(lost),
        _ => ClientError::Connection(error.to_string()),
    }
}

impl Stream for Subscription {
    type Item = Result<RecordBatch, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let batch = ready!(this.poll_batch(cx));
        this.ended = batch.is_err();
        Poll::Ready(Some(batch))
    }
}

/// One shard's batch in a [`StreamSubscription`].
#[derive(Debug, Clone)]
pub struct ShardBatch {
    pub shard: u32,
    pub batch: RecordBatch,
}

/// Live feeds of several shards merged into one, from
/// [`crate::Client::subscribe_stream`]: each shard's batches come in that
/// shard's order, shards interleave as their records arrive (no shard
/// starves another). Records of one shard are ordered by sequence number;
/// there is no order across shards, as in Kinesis and Kafka. As a
/// [`Stream`] it ends after the first error of any shard.
#[derive(Debug)]
pub struct StreamSubscription {
    shards: Vec<(u32, Subscription)>,
    /// The shard polled first next time, for fairness.
    next_shard: usize,
}

impl StreamSubscription {
    /// Merges subscriptions to the given shards.
    pub fn from_shards(shards: Vec<(u32, Subscription)>) -> Self {
        Self {
            shards,
            next_shard: 0,
        }
    }

    /// Each shard and the sequence number its feed started at.
    pub fn start_sequences(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.shards
            .iter()
            .map(|(shard, feed)| (*shard, feed.start_sequence()))
    }

    /// The next batch of any shard; waits until there is one.
    pub async fn next(&mut self) -> Result<ShardBatch, ClientError> {
        std::future::poll_fn(|cx| self.poll_batch(cx)).await
    }

    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Result<ShardBatch, ClientError>> {
        let count = self.shards.len();
        for offset in 0..count {
            let index = (self.next_shard + offset) % count;
            let (shard, feed) = &mut self.shards[index];
            if let Poll::Ready(batch) = feed.poll_batch(cx) {
                self.next_shard = (index + 1) % count;
                let shard = *shard;
                return Poll::Ready(batch.map(|batch| ShardBatch { shard, batch }));
            }
        }
        Poll::Pending
    }
}

impl Stream for StreamSubscription {
    type Item = Result<ShardBatch, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.shards.iter().any(|(_, feed)| feed.ended) || this.shards.is_empty() {
            return Poll::Ready(None);
        }
        let batch = ready!(this.poll_batch(cx));
        if batch.is_err() {
            this.shards
                .iter_mut()
                .for_each(|(_, feed)| feed.ended = true);
        }
        Poll::Ready(Some(batch))
    }
}
