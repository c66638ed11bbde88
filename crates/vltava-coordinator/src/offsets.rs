//! Committed offsets per group, rebuilt from `__consumer_offsets` records.

use std::collections::BTreeMap;

use crate::records::{OffsetValue, Record};

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OffsetStore {
    groups: BTreeMap<String, BTreeMap<(String, i32), OffsetValue>>,
}

impl OffsetStore {
    pub fn apply(&mut self, record: &Record) {
        if let Record::Offset {
            group,
            topic,
            partition,
            value,
        } = record
        {
            let key = (topic.clone(), *partition);
            match value {
                Some(v) => {
                    self.groups
                        .entry(group.clone())
                        .or_default()
                        .insert(key, v.clone());
                }
                None => {
                    if let Some(g) = self.groups.get_mut(group) {
                        g.remove(&key);
                        if g.is_empty() {
                            self.groups.remove(group);
                        }
                    }
                }
            }
        }
    }

    pub fn get(&self, group: &str, topic: &str, partition: i32) -> Option<&OffsetValue> {
        self.groups.get(group)?.get(&(topic.to_string(), partition))
    }

    pub fn group(&self, group: &str) -> impl Iterator<Item = (&(String, i32), &OffsetValue)> {
        self.groups.get(group).into_iter().flatten()
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.groups.contains_key(group)
    }

    pub fn groups(&self) -> impl Iterator<Item = &String> {
        self.groups.keys()
    }

    /// Tombstones for every offset of `group`.
    pub fn delete_group(&self, group: &str) -> Vec<Record> {
        self.group(group)
            .map(|((t, p), _)| Record::Offset {
                group: group.to_string(),
                topic: t.clone(),
                partition: *p,
                value: None,
            })
            .collect()
    }

    /// Kafka's `offsets.retention.minutes`: offsets of a group that has had no members for
    /// the retention period (or, for groups without members ever, committed that long ago)
    /// are removed. `empty_since` gives when a group became empty, `None` if it has members.
    pub fn expire(
        &self,
        now_ms: i64,
        retention_ms: i64,
        empty_since: impl Fn(&str) -> Option<Option<i64>>,
    ) -> Vec<Record> {
        let mut out = Vec::new();
        for (group, offsets) in &self.groups {
            match empty_since(group) {
                Some(None) => continue, // active members
                Some(Some(since)) if now_ms - since < retention_ms => continue,
                Some(Some(_)) => out.extend(self.delete_group(group)),
                None => {
                    for ((t, p), v) in offsets {
                        if now_ms - v.commit_timestamp_ms >= retention_ms {
                            out.push(Record::Offset {
                                group: group.clone(),
                                topic: t.clone(),
                                partition: *p,
                                value: None,
                            });
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(group: &str, partition: i32, offset: i64, ts: i64) -> Record {
        Record::Offset {
            group: group.into(),
            topic: "t".into(),
            partition,
            value: Some(OffsetValue {
                offset,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp_ms: ts,
            }),
        }
    }

    #[test]
    fn apply_and_expire() {
        let mut s = OffsetStore::default();
        s.apply(&commit("a", 0, 5, 0));
        s.apply(&commit("a", 0, 7, 10));
        s.apply(&commit("b", 1, 1, 0));
        assert_eq!(s.get("a", "t", 0).unwrap().offset, 7);
        // "a" has members: kept; "b" has no group and is old: expired.
        let gone = s.expire(100, 50, |g| if g == "a" { Some(None) } else { None });
        assert_eq!(gone.len(), 1);
        for r in &gone {
            s.apply(r);
        }
        assert!(!s.has_group("b"));
        // "a" empty for long enough: all its offsets go.
        let gone = s.expire(200, 50, |_| Some(Some(100)));
        assert_eq!(gone.len(), 1);
    }
}
