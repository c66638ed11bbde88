//! The head of a Produce frame is read from untrusted bytes before the records are moved
//! to a log: it must never panic, and what it finds must agree with the decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    vltava_protocol::produce_head::check_agrees_with_decoder(data);
});
