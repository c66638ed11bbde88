//! Producer ids: handed out one at a time from blocks that the controller records in the
//! metadata log (`ProducerIdsRecord`), so no id is ever given twice, across restarts or
//! brokers. A block is taken only when the last one runs out, as Kafka's brokers do with
//! AllocateProducerIds.

use std::sync::Arc;

use parking_lot::Mutex;
use vltava_metadata::MetadataRecord;
use vltava_protocol::ErrorCode;

use crate::controller::{Controller, OpError};
use vltava_types::{NodeId, ProducerId};

/// Ids per block, as Kafka's controller hands them out.
pub const BLOCK_SIZE: i64 = 1000;

pub struct ProducerIdManager {
    controller: Arc<Controller>,
    node_id: NodeId,
    /// `[next, end)` of the current block.
    block: Mutex<(i64, i64)>,
    /// One block request at a time.
    refill: tokio::sync::Mutex<()>,
}

impl ProducerIdManager {
    pub fn new(controller: Arc<Controller>, node_id: NodeId) -> Self {
        Self {
            controller,
            node_id,
            block: Mutex::new((0, 0)),
            refill: tokio::sync::Mutex::new(()),
        }
    }

    fn take(&self) -> Option<i64> {
        let mut b = self.block.lock();
        (b.0 < b.1).then(|| {
            b.0 += 1;
            b.0 - 1
        })
    }

    /// The next unused producer id. Fails only if the metadata log cannot take a new block.
    pub async fn next_id(&self) -> Result<i64, OpError> {
        loop {
            if let Some(id) = self.take() {
                return Ok(id);
            }
            let _refill = self.refill.lock().await;
            let (next, end) = *self.block.lock();
            if next < end {
                continue;
            }
            let node_id = self.node_id;
            let start = self
                .controller
                .write(move |image| {
                    let start = image.next_producer_id.get();
                    let Some(end) = start.checked_add(BLOCK_SIZE) else {
                        return Err(OpError::new(
                            ErrorCode::UnknownServerError,
                            "producer ids are exhausted",
                        ));
                    };
                    let record = MetadataRecord::ProducerIdsRecord {
                        broker_id: node_id,
                        broker_epoch: 0,
                        next_producer_id: ProducerId::new(end),
                    };
                    Ok((vec![record], start))
                })
                .await?;
            tracing::info!(
                start,
                end = start + BLOCK_SIZE,
                "took a block of producer ids"
            );
            *self.block.lock() = (start, start + BLOCK_SIZE);
        }
    }
}
