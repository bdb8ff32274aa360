pub mod certificate;
pub(crate) mod codec;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod hlc;
pub mod identity;
pub mod register;
