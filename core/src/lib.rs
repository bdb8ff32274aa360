//! The sans-IO core of Kathon Sync.
//!
//! Kathon Sync keeps a person's browser state — bookmarks, history, passwords, workspaces and
//! keys — in step across their own devices with no server. This crate holds **all** of the
//! protocol logic and none of the IO: it never touches the network, storage, threads or the
//! clock. Time comes in as an argument (`now_ms`), randomness as a generator the caller passes,
//! bytes as slices; what should be sent or stored comes out as values. The browser bindings
//! (`kathon-wasm`) and the native bridge (`kathon-bridge`) are thin drivers around it, and it
//! builds for `wasm32-unknown-unknown` importing nothing from the host.
//!
//! # Layers
//!
//! ```text
//!   register      signed last-writer-wins values with causal supersession
//!   envelope      signed, hash-named, chained transactions of one device; equivocation
//!   certificate   root-signed device certificates and revocations; the device registry
//!   identity      root and device keys, the checksummed text form of IDs
//!   hlc           the hybrid logical clock, fed with `now`
//!   codec, hash   canonical fixed-width encodings, domain-separated BLAKE3
//! ```
//!
//! # Parse, don't validate
//!
//! Untrusted bytes become a *decoded* value (`Envelope`, `DeviceCertificate`, `RegisterValue`,
//! …) through a `decode` that checks form only — caps on every length before anything is
//! allocated, canonical order, no trailing bytes — and never panics. Trust is a separate step:
//! `verify` checks the signer against the [`certificate::DeviceRegistry`] and the signature with
//! `verify_strict`, and returns a `Verified…` type. Everything downstream takes only the verified
//! types, so an unchecked value cannot reach the document by mistake.
//!
//! The byte layouts and the verification rules are written down in `docs/protocol.md`; the
//! attacks they answer, with the tests that show each one refused, in `docs/threat-model.md`.
//!
//! # Example
//!
//! ```
//! use kathon_core::certificate::{DeviceCertificate, DeviceName, DeviceRegistry, NEVER_EXPIRES};
//! use kathon_core::envelope::{Envelope, UnsignedEnvelope};
//! use kathon_core::hlc::HybridClock;
//! use kathon_core::identity::{DeviceSecretKey, RootSecretKey};
//! # use rand_core::SeedableRng;
//! # let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//!
//! // A user identity and one enrolled device.
//! let root = RootSecretKey::generate(&mut rng);
//! let laptop = DeviceSecretKey::generate(&mut rng);
//! let name = DeviceName::new("laptop")?;
//! let cert = DeviceCertificate::issue(&root, laptop.public(), name, 0, NEVER_EXPIRES);
//! let mut registry = DeviceRegistry::new(root.public());
//! registry.add_certificate(cert)?;
//!
//! // The laptop signs a change at local time `now_ms`.
//! let now_ms = 1_764_000_000_000;
//! let mut clock = HybridClock::default();
//! let change = UnsignedEnvelope {
//!     kind: 1,
//!     seq: 1,
//!     prev: None,
//!     hlc: clock.tick(now_ms)?,
//!     parents: vec![],
//!     payload: b"a yrs update".to_vec(),
//!     attachments: vec![],
//! };
//! let bytes = Envelope::sign(&laptop, &root.public(), change)?.encode();
//!
//! // Another device decodes the untrusted bytes, then verifies them.
//! let verified = Envelope::decode(&bytes)?.verify(&registry)?;
//! assert_eq!(&*verified.payload()?, b"a yrs update");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod certificate;
pub(crate) mod codec;
pub mod discovery;
pub mod envelope;
pub mod error;
pub mod hash;
pub mod hlc;
pub mod identity;
pub mod model;
pub mod register;
pub mod signaling;
#[cfg(feature = "test-util")]
pub mod sim;
pub mod sync;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod text;
