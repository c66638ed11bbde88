//! `__consumer_offsets` records are read back from disk at every start, and may come from
//! Kafka: any key and value must decode to records or an error, never a panic or an
//! allocation larger than the input justifies. Whatever decodes must encode again (or
//! report a field too long for the version we write).
#![no_main]

use libfuzzer_sys::fuzz_target;
use uuid::Uuid;
use vltava_coordinator::records::{Record, TopicIds};

/// Every topic id is known, so assignment decoding runs to the end.
struct AnyTopic;

impl TopicIds for AnyTopic {
    fn topic_id(&self, name: &str) -> Option<Uuid> {
        Uuid::parse_str(name).ok()
    }

    fn topic_name(&self, id: Uuid) -> Option<String> {
        Some(id.to_string())
    }
}

fuzz_target!(|data: &[u8]| {
    // First byte: whether there is a value; next two: the key length; the rest is split.
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else {
        return;
    };
    let (key, value) = rest.split_at((u16::from_be_bytes(*len) as usize).min(rest.len()));
    let value = (flags & 1 == 1).then_some(value);
    if let Ok(records) = Record::decode(key, value, &AnyTopic) {
        for r in records {
            let _ = r.encode(&AnyTopic);
        }
    }
});
