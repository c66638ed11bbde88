//! vltava-protocol
