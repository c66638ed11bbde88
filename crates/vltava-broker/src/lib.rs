//! vltava-broker
