//! Listener security: TLS for `SSL`/`SASL_SSL` listeners, SASL authentication, and the
//! JAAS values that configure it. Each part turns a connection into a [`KafkaPrincipal`];
//! what the principal may do is the [`Authorizer`]'s business.
//!
//! [`KafkaPrincipal`]: crate::context::KafkaPrincipal
//! [`Authorizer`]: crate::context::Authorizer

pub mod authorizer;
pub mod jaas;
pub mod peer;
pub mod principal_rules;
pub mod sasl;
pub mod scram;
pub mod tls;
