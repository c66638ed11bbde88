//! Produce payloads: validation must reject or accept, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vltava_record::validate(data, 1 << 20);
    for item in vltava_record::Batches::new(data) {
        let _ = item;
    }
});
