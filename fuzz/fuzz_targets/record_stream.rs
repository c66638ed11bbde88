#![no_main]
//! The records inside a batch, as produce checks compressed batches and ListOffsets by
//! timestamp reads them: arbitrary bytes under every codec must give records or an error,
//! within the cap, never a panic.

use libfuzzer_sys::fuzz_target;
use vltava_record::{check_compressed, record_stream, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    if data.len() < HEADER_LEN {
        return;
    }
    let mut batch = data.to_vec();
    // A consistent batch length and magic, so the header parses and the body is reached.
    let len = (batch.len() - 12) as i32;
    batch[8..12].copy_from_slice(&len.to_be_bytes());
    batch[16] = 2;
    let _ = check_compressed(&batch, 1 << 20);
    let Ok(stream) = record_stream(&batch, 1 << 20) else {
        return;
    };
    for item in stream.take(100_000) {
        if item.is_err() {
            break;
        }
    }
});
