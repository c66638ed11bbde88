//! Leader election among registry instances, through a Kafka consumer group as Confluent's
//! registry does: every instance joins the group subscribed to the one-partition `_schemas`
//! topic, so exactly one member is assigned its partition, and that member leads. Each
//! member's `client.id` is its URL, so followers find where to forward writes by describing
//! the group.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// What the election thread knows.
#[derive(Default)]
pub struct Leadership {
    leader: AtomicBool,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::Relaxed)
    }
}

pub struct Election {
    consumer: Arc<BaseConsumer>,
    group: String,
    topic: String,
    pub leadership: Arc<Leadership>,
    stop: Arc<AtomicBool>,
    thread: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Election {
    pub fn join(
        mut config: ClientConfig,
        group: &str,
        topic: &str,
        my_url: &str,
    ) -> Result<Election, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = config
            .set("group.id", group)
            .set("client.id", my_url)
            .set("enable.auto.commit", "false")
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "1000")
            .create()?;
        consumer.subscribe(&[topic])?;
        let consumer = Arc::new(consumer);
        let leadership = Arc::new(Leadership::default());
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let consumer = consumer.clone();
            let leadership = leadership.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("registry-election".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        // Messages are not needed here (the store's reader applies them);
                        // polling keeps the membership alive and runs rebalances.
                        let _ = consumer.poll(Duration::from_millis(100));
                        let assigned = consumer
                            .assignment()
                            .map(|a| a.count() > 0)
                            .unwrap_or(false);
                        if assigned {
                            if let Ok(a) = consumer.assignment() {
                                let _ = consumer.pause(&a);
                            }
                        }
                        let was = leadership.leader.swap(assigned, Ordering::Relaxed);
                        if was != assigned {
                            tracing::info!(leader = assigned, "registry leadership changed");
                        }
                    }
                    leadership.leader.store(false, Ordering::Relaxed);
                    consumer.unsubscribe();
                })
                .map_err(|e| {
                    rdkafka::error::KafkaError::ClientCreation(format!("election thread: {e}"))
                })?
        };
        Ok(Election {
            consumer,
            group: group.to_string(),
            topic: topic.to_string(),
            leadership,
            stop,
            thread: parking_lot::Mutex::new(Some(thread)),
        })
    }

    /// The leader's URL as the group reports it, if a member holds the partition.
    pub fn leader_url(&self, timeout: Duration) -> Option<String> {
        let groups = self
            .consumer
            .client()
            .fetch_group_list(Some(&self.group), timeout)
            .ok()?;
        let group = groups.groups().iter().find(|g| g.name() == self.group)?;
        group
            .members()
            .iter()
            .find(|m| {
                m.assignment()
                    .is_some_and(|a| assignment_has_partition(a, &self.topic, 0))
            })
            .map(|m| m.client_id().to_string())
    }

    /// Leaves the group, so another instance takes over at once.
    pub fn leave(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.lock().take() {
            let _ = t.join();
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether a consumer-protocol assignment (Kafka's `ConsumerProtocolAssignment`: version,
/// then per topic its name and partitions) gives `partition` of `topic`. Malformed bytes
/// give `false`.
pub fn assignment_has_partition(bytes: &[u8], topic: &str, partition: i32) -> bool {
    struct Cursor<'a>(&'a [u8]);
    impl Cursor<'_> {
        fn take(&mut self, n: usize) -> Option<&[u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, tail) = self.0.split_at(n);
            self.0 = tail;
            Some(head)
        }
        fn i16(&mut self) -> Option<i16> {
            self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
        }
        fn i32(&mut self) -> Option<i32> {
            self.take(4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }
    }
    let mut c = Cursor(bytes);
    let found = (|| {
        c.i16()?;
        let topics = c.i32()?;
        for _ in 0..topics.max(0) {
            let len = usize::try_from(c.i16()?).ok()?;
            let name = c.take(len)?.to_vec();
            let count = c.i32()?;
            for _ in 0..count.max(0) {
                let p = c.i32()?;
                if name == topic.as_bytes() && p == partition {
                    return Some(true);
                }
            }
        }
        Some(false)
    })();
    found.unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assignment(topics: &[(&str, &[i32])]) -> Vec<u8> {
        let mut b = vec![0, 1];
        b.extend((topics.len() as i32).to_be_bytes());
        for (name, parts) in topics {
            b.extend((name.len() as i16).to_be_bytes());
            b.extend(name.as_bytes());
            b.extend((parts.len() as i32).to_be_bytes());
            for p in *parts {
                b.extend(p.to_be_bytes());
            }
        }
        b.extend((-1i32).to_be_bytes());
        b
    }

    #[test]
    fn finds_the_partition_in_an_assignment() {
        assert!(assignment_has_partition(
            &assignment(&[("_schemas", &[0])]),
            "_schemas",
            0
        ));
        assert!(assignment_has_partition(
            &assignment(&[("other", &[0]), ("_schemas", &[0])]),
            "_schemas",
            0
        ));
        assert!(!assignment_has_partition(
            &assignment(&[("_schemas", &[])]),
            "_schemas",
            0
        ));
        assert!(!assignment_has_partition(
            &assignment(&[("other", &[0])]),
            "_schemas",
            0
        ));
    }

    #[test]
    fn malformed_assignments_are_not_leadership() {
        let full = assignment(&[("_schemas", &[0])]);
        for cut in 0..full.len() - 8 {
            assert!(
                !assignment_has_partition(&full[..cut], "_schemas", 0),
                "{cut}"
            );
        }
        assert!(!assignment_has_partition(
            &[0, 0, 0x7f, 0xff, 0xff, 0xff],
            "_schemas",
            0
        ));
    }
}
