//! vltava-metadata
