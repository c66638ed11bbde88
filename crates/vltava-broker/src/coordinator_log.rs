//! The coordinator runtime's view of its internal topic, over the broker's partition table.
//! The only place a coordinator touches a `Partition` or a `Log`.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};

use crate::broker::{now_ms, Broker};
use crate::coordinator_runtime::{CoordinatorLog, LogError};
use crate::partition::{AckError, AppendError, Partition, ReadLimit};
use vltava_record::TransactionResult;

fn log_error(partition: i32, e: AppendError) -> LogError {
    match e {
        AppendError::NotLeader(_) => LogError::NotLeader { partition },
        AppendError::Storage(e) => LogError::Storage(e),
    }
}

pub struct PartitionTableLog {
    broker: Weak<Broker>,
    topic: &'static str,
}

impl PartitionTableLog {
    pub fn new(broker: Weak<Broker>, topic: &'static str) -> Self {
        Self { broker, topic }
    }

    fn partition(&self, partition: i32) -> Result<(Arc<Broker>, Arc<Partition>), LogError> {
        let broker = self
            .broker
            .upgrade()
            .ok_or(LogError::NotHosted { partition })?;
        let p = broker
            .partitions
            .get(self.topic, partition)
            .ok_or(LogError::NotHosted { partition })?;
        Ok((broker, p))
    }
}

impl CoordinatorLog for PartitionTableLog {
    fn append(&self, partition: i32, batch: &mut [u8]) -> Result<i64, LogError> {
        let (_, p) = self.partition(partition)?;
        let info = p
            .append_as_coordinator(batch, now_ms())
            .map_err(|e| log_error(partition, e))?;
        let end = info.last_offset.next().get();
        p.request_flush();
        Ok(end)
    }

    fn append_txn_marker(
        &self,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> Result<i64, LogError> {
        let (_, p) = self.partition(partition)?;
        let result = if commit {
            TransactionResult::Commit
        } else {
            TransactionResult::Abort
        };
        let info = p
            .append_txn_marker(
                producer_id,
                producer_epoch,
                result,
                coordinator_epoch,
                now_ms(),
            )
            .map_err(|e| log_error(partition, e))?;
        p.request_flush();
        Ok(info.last_offset.next().get())
    }

    fn wait_durable(
        &self,
        partition: i32,
        end_offset: i64,
    ) -> BoxFuture<'static, Result<(), LogError>> {
        match self.partition(partition) {
            // Kafka writes coordinator records with acks=all: durable on the whole ISR.
            Ok((_, p)) => async move {
                p.wait_acked(end_offset, true).await.map_err(|e| match e {
                    AckError::Storage(e) => LogError::Storage(e),
                    AckError::NotLeader => LogError::NotLeader { partition },
                    AckError::NotEnoughReplicasAfterAppend { .. } => {
                        LogError::NotEnoughReplicas { partition }
                    }
                })
            }
            .boxed(),
            Err(e) => futures::future::ready(Err(e)).boxed(),
        }
    }

    fn read(&self, partition: i32, from: i64, max_bytes: usize) -> Result<(Bytes, i64), LogError> {
        let (_, p) = self.partition(partition)?;
        // Coordinators read every record written so far: up to the log end.
        let r = p.read(from, max_bytes, true, ReadLimit::LogEnd)?;
        let mut next = from;
        for item in vltava_record::Batches::new(&r.records) {
            let Ok((h, _)) = item else { break };
            next = next.max(h.next_offset());
        }
        Ok((r.records, next))
    }

    fn log_start_offset(&self, partition: i32) -> Result<i64, LogError> {
        Ok((self.partition(partition)?.1.offsets().log_start_offset).get())
    }

    fn log_end_offset(&self, partition: i32) -> Result<i64, LogError> {
        Ok((self.partition(partition)?.1.offsets().log_end_offset).get())
    }
}
