//! Any frame body a client can send must decode to a request or an error, never a panic or
//! an allocation larger than the input justifies.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vltava_protocol::decode_request(bytes::Bytes::copy_from_slice(data));
});
