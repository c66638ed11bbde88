//! What a coordinator runtime needs from the state machine of one internal-topic partition
//! (a *shard*): how to replay a record, how records look as bytes, and what an operation
//! returns. The runtime (in the broker) owns the I/O: it appends an operation's records, then
//! hands them back to [`CoordinatorShard::replay`], the same path that loads a shard from its
//! log, so live state and loaded state are built the same way.

use vltava_types::{ProducerEpoch, ProducerId};

/// A record as stored: key, and value (`None`: a tombstone).
pub type KeyValue = (Vec<u8>, Option<Vec<u8>>);

/// The state of one partition of an internal topic (`__consumer_offsets`, and later
/// `__transaction_state`), rebuilt from that partition's records.
pub trait CoordinatorShard: Send + 'static {
    type Record: Send + 'static;
    type CodecError: std::fmt::Display;

    /// Applies one stored record. Total: any sequence of records replays. Called for every
    /// record at load and for every record an operation wrote, once it is appended.
    fn replay(&mut self, record: &Self::Record, now_ms: i64);

    /// The record's key and value (`None`: a tombstone) as stored in the log.
    fn encode(&self, record: &Self::Record) -> Result<KeyValue, Self::CodecError>;

    /// The records one stored key/value holds (none, if the key is of no interest).
    fn decode(
        &self,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<Vec<Self::Record>, Self::CodecError>;

    /// Applies one record of a transactional batch of `producer_id`. Such records take
    /// effect only once that producer's commit marker is replayed
    /// ([`CoordinatorShard::replay_end_txn`]), as in Kafka, where the marker decides.
    /// The default, for shards that never write transactional batches, applies it at once.
    fn replay_transactional(
        &mut self,
        producer_id: ProducerId,
        record: &Self::Record,
        now_ms: i64,
    ) {
        let _ = producer_id;
        self.replay(record, now_ms);
    }

    /// A transaction marker of `producer_id` in this partition: its pending records are
    /// applied (`commit`) or dropped.
    fn replay_end_txn(&mut self, producer_id: ProducerId, commit: bool, now_ms: i64) {
        let _ = (producer_id, commit, now_ms);
    }

    /// Whether records of transactions without a marker yet are held. The log must not be
    /// trimmed then: the live records do not carry them, and their marker is still to come.
    fn has_open_transactions(&self) -> bool {
        false
    }
}

/// The producer a transactional batch is written for (TxnOffsetCommit's offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnBatch {
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
}

/// Puts back what an operation changed in place, when its records could not be written.
pub type Undo<S> = Box<dyn FnOnce(&mut S) + Send>;

/// What an operation returns: the records to write (applied through
/// [`CoordinatorShard::replay`] once appended) and the reply to give once they are durable.
/// An operation that changed runtime-only state in place before knowing whether its records
/// can be written (a classic group's join phase, say) also returns how to undo that.
pub struct CoordinatorResult<S: CoordinatorShard, R> {
    pub records: Vec<S::Record>,
    pub reply: R,
    pub undo: Option<Undo<S>>,
    /// `Some`: the records are one transactional batch of this producer, replayed through
    /// [`CoordinatorShard::replay_transactional`].
    pub transaction: Option<TxnBatch>,
}

impl<S: CoordinatorShard, R> CoordinatorResult<S, R> {
    /// A reply with nothing to write.
    pub fn reply(reply: R) -> Self {
        Self {
            records: Vec::new(),
            reply,
            undo: None,
            transaction: None,
        }
    }

    pub fn new(records: Vec<S::Record>, reply: R) -> Self {
        Self {
            records,
            reply,
            undo: None,
            transaction: None,
        }
    }

    /// Records to write as one transactional batch of `batch`'s producer.
    pub fn transactional(records: Vec<S::Record>, reply: R, batch: TxnBatch) -> Self {
        Self {
            records,
            reply,
            undo: None,
            transaction: Some(batch),
        }
    }

    pub fn map<T>(self, f: impl FnOnce(R) -> T) -> CoordinatorResult<S, T> {
        CoordinatorResult {
            records: self.records,
            reply: f(self.reply),
            undo: self.undo,
            transaction: self.transaction,
        }
    }

    /// The same result for a shard type `T` that wraps `S` (`inner` finds `S` in it).
    pub fn lift<T>(self, inner: fn(&mut T) -> &mut S) -> CoordinatorResult<T, R>
    where
        T: CoordinatorShard<Record = S::Record>,
    {
        CoordinatorResult {
            records: self.records,
            reply: self.reply,
            undo: self
                .undo
                .map(|u| -> Undo<T> { Box::new(move |t: &mut T| u(inner(t))) }),
            transaction: self.transaction,
        }
    }
}
