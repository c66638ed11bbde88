//! Produce payloads: validation must reject or accept, never panic, and a payload streamed in
//! pieces (as the zero-copy produce path reads it) must get the same verdict as the whole.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = vltava_record::validate(data, 1 << 20);
    for item in vltava_record::Batches::new(data) {
        let _ = item;
    }
    // The first byte picks the piece size, so every split is reachable.
    let piece = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut stream = vltava_record::stream::StreamValidator::new(1 << 20);
    let fed = data.chunks(piece).try_for_each(|c| stream.feed(c));
    let streamed = fed.and_then(|()| stream.finish()).map(|(summary, _)| summary);
    assert_eq!(streamed, whole);
});
