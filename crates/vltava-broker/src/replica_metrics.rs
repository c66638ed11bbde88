//! Kafka's ReplicaManager gauges (`kafka.server:type=ReplicaManager`): the partitions this
//! broker hosts and leads, and how many of those it leads lack in-sync replicas, the
//! figures an operator alerts on first.
//!
//! Computed at each scrape from the partitions' own state, so nothing is kept in step on
//! the append or ISR paths.

use std::fmt::Write;

/// What the gauges need of one hosted partition.
#[derive(Debug, Clone, Copy)]
pub struct ReplicaState {
    pub leader: bool,
    /// The assigned replicas, this one included.
    pub replicas: usize,
    pub isr: usize,
    pub min_insync_replicas: usize,
    /// The log failed an I/O operation and serves nothing (Kafka's offline replica).
    pub offline: bool,
}

/// Kafka's ReplicaManager gauges, over the partitions hosted here.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaGauges {
    pub partitions: u64,
    pub leaders: u64,
    /// Led here with fewer in-sync replicas than assigned ones.
    pub under_replicated: u64,
    /// Led here with fewer in-sync replicas than `min.insync.replicas`: acks=all fails.
    pub under_min_isr: u64,
    /// Led here with exactly `min.insync.replicas` in sync: one more loss fails acks=all.
    pub at_min_isr: u64,
    pub offline_replicas: u64,
}

impl ReplicaGauges {
    pub fn of(states: impl IntoIterator<Item = ReplicaState>) -> Self {
        let mut g = Self::default();
        for s in states {
            g.partitions += 1;
            if s.offline {
                g.offline_replicas += 1;
                continue;
            }
            if !s.leader {
                continue;
            }
            g.leaders += 1;
            g.under_replicated += u64::from(s.isr < s.replicas);
            g.under_min_isr += u64::from(s.isr < s.min_insync_replicas);
            g.at_min_isr += u64::from(s.isr == s.min_insync_replicas);
        }
        g
    }

    /// Prometheus text, under Kafka's JMX names as the JMX exporter spells them.
    pub fn render(&self, out: &mut String) {
        let series: [(&str, &str, u64); 6] = [
            (
                "partitioncount",
                "Partitions hosted on this broker",
                self.partitions,
            ),
            ("leadercount", "Partitions this broker leads", self.leaders),
            (
                "underreplicatedpartitions",
                "Partitions led here with fewer in-sync replicas than assigned ones",
                self.under_replicated,
            ),
            (
                "underminisrpartitioncount",
                "Partitions led here with fewer in-sync replicas than min.insync.replicas",
                self.under_min_isr,
            ),
            (
                "atminisrpartitioncount",
                "Partitions led here with exactly min.insync.replicas in sync",
                self.at_min_isr,
            ),
            (
                "offlinereplicacount",
                "Hosted partitions whose log failed and serves nothing",
                self.offline_replicas,
            ),
        ];
        for (name, help, value) in series {
            let full = format!("kafka_server_replicamanager_{name}");
            let _ = writeln!(out, "# HELP {full} {help}");
            let _ = writeln!(out, "# TYPE {full} gauge");
            let _ = writeln!(out, "{full} {value}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: bool, replicas: usize, isr: usize, min: usize) -> ReplicaState {
        ReplicaState {
            leader,
            replicas,
            isr,
            min_insync_replicas: min,
            offline: false,
        }
    }

    #[test]
    fn only_led_partitions_count_as_under_replicated_or_at_min_isr() {
        let g = ReplicaGauges::of([
            state(true, 3, 3, 2),  // healthy
            state(true, 3, 2, 2),  // under-replicated, at min ISR
            state(true, 3, 1, 2),  // under-replicated, under min ISR
            state(false, 3, 1, 2), // a follower: the leader reports it
            state(true, 1, 1, 1),  // single replica: at min ISR, not under-replicated
            ReplicaState {
                offline: true,
                ..state(true, 3, 3, 2)
            },
        ]);
        assert_eq!(
            g,
            ReplicaGauges {
                partitions: 6,
                leaders: 4,
                under_replicated: 2,
                under_min_isr: 1,
                at_min_isr: 2,
                offline_replicas: 1,
            }
        );
    }

    #[test]
    fn renders_each_gauge_once_under_kafkas_name() {
        let mut text = String::new();
        ReplicaGauges::of([state(true, 3, 2, 2)]).render(&mut text);
        for (name, v) in [
            ("partitioncount", 1),
            ("leadercount", 1),
            ("underreplicatedpartitions", 1),
            ("underminisrpartitioncount", 0),
            ("atminisrpartitioncount", 1),
            ("offlinereplicacount", 0),
        ] {
            let line = format!("kafka_server_replicamanager_{name} {v}");
            assert_eq!(text.lines().filter(|l| *l == line).count(), 1, "{text}");
            assert!(text.contains(&format!("# TYPE kafka_server_replicamanager_{name} gauge")));
        }
    }
}
