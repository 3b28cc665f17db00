//! `topics`: creates the event topics on the broker when they are missing (Kafka admin API).
//!
//! Runs on the thread that calls it (start-up, or the producer thread on recovery), bounded by
//! a timeout. Owns no state. Must never alter an existing topic (partition count and settings of
//! an existing topic are the operator's).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

/// Why the topics could not be made sure of.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("kafka admin client: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("creating topic {topic}: {code}")]
    Create {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("creating topics timed out after {0:?}")]
    Timeout(Duration),
}

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Drives a future on this thread until it completes or `timeout` passes. (rdkafka's admin
/// futures complete from librdkafka's background thread, so no runtime is needed.)
pub(crate) fn block_on_timeout<F: Future>(f: F, timeout: Duration) -> Option<F::Output> {
    let deadline = Instant::now() + timeout;
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return Some(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        std::thread::park_timeout(deadline - now);
    }
}

/// Creates `topics` (normally `helios.bids` and `helios.outcomes`) with `partitions`
/// partitions if they do not exist.
pub fn ensure_topics(
    brokers: &str,
    topics: &[&str],
    partitions: i32,
    replication: i32,
    timeout: Duration,
) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("socket.timeout.ms", timeout.as_millis().max(10).to_string())
        .create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(
                t,
                partitions.max(1),
                TopicReplication::Fixed(replication.max(1)),
            )
        })
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(timeout))
        .operation_timeout(Some(timeout));
    let results = block_on_timeout(
        admin.create_topics(&new, &opts),
        timeout + Duration::from_millis(500),
    )
    .ok_or(TopicError::Timeout(timeout))??;
    for r in results {
        match r {
            Ok(topic) => tracing::info!(topic, partitions, "pipeline: created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(TopicError::Create { topic, code }),
        }
    }
    Ok(())
}
