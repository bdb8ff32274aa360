//! Device certificates, revocations, and the registry that decides whether a device may write.
//!
//! The root key signs a [`DeviceCertificate`] for each device (identity, device key, name,
//! validity) and, when a device is lost, a [`Revocation`] naming the last of its writes that stays
//! valid. Both are self-certifying: anyone holding the [`IdentityId`] can check them, so they
//! travel over untrusted channels like any other data. [`DeviceRegistry`] holds the verified ones
//! and answers the one question ingest asks: *may this device sign write number `seq` at this
//! time?* Its contents only grow, and merging two registries gives the same result in any order.

use std::collections::BTreeMap;

use crate::codec::{Reader, Writer};
use crate::error::{DecodeError, VerifyError};
use crate::hash::{Hash, context};
use ed25519_dalek::VerifyingKey;

use crate::identity::{DeviceId, IdentityId, RootSecretKey, domain, signing_message, verify_strict};

/// Format byte of a device certificate: type 2, version 1.
const CERT_FORMAT: u8 = 0x21;
/// Format byte of a revocation: type 3, version 1.
const REVOCATION_FORMAT: u8 = 0x31;
/// Longest device name, in bytes of UTF-8.
pub const MAX_DEVICE_NAME_LEN: u8 = 64;
/// `not_after_ms` of a certificate that never expires.
pub const NEVER_EXPIRES: u64 = u64::MAX;

/// A device's display name: 1–64 bytes of UTF-8 with no control characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceName(String);

/// Why a device name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceNameError {
    /// Empty, or longer than [`MAX_DEVICE_NAME_LEN`] bytes.
    #[error("a device name has 1 to {MAX_DEVICE_NAME_LEN} bytes; this has {0}")]
    Length(usize),
    /// Contains a control character.
    #[error("a device name may not contain control characters")]
    ControlCharacter,
}

impl DeviceName {
    /// Validates a name.
    pub fn new(name: &str) -> Result<Self, DeviceNameError> {
        if name.is_empty() || name.len() > usize::from(MAX_DEVICE_NAME_LEN) {
            return Err(DeviceNameError::Length(name.len()));
        }
        if name.chars().any(char::is_control) {
            return Err(DeviceNameError::ControlCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl core::fmt::Display for DeviceName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A root-signed statement that a device belongs to an identity. Decoded but **not verified**:
/// call [`DeviceCertificate::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCertificate {
    identity: IdentityId,
    device: DeviceId,
    name: DeviceName,
    not_before_ms: u64,
    not_after_ms: u64,
    signature: [u8; 64],
    id: Hash,
}

impl DeviceCertificate {
    /// Upper bound of an encoded certificate.
    pub const MAX_ENCODED_LEN: usize = 1 + 32 + 32 + 8 + 8 + 1 + MAX_DEVICE_NAME_LEN as usize + 64;

    /// Issues a certificate for `device`, valid from `not_before_ms` until `not_after_ms`
    /// ([`NEVER_EXPIRES`] for no end).
    pub fn issue(
        root: &RootSecretKey,
        device: DeviceId,
        name: DeviceName,
        not_before_ms: u64,
        not_after_ms: u64,
    ) -> VerifiedCertificate {
        let identity = root.public();
        let body = Self::encode_body(&identity, &device, &name, not_before_ms, not_after_ms);
        let id = Hash::digest(&context::CERTIFICATE_ID, &[body.as_bytes()]);
        let signature = root.sign(&signing_message(domain::DEVICE_CERTIFICATE, &identity, &id));
        VerifiedCertificate::new(Self { identity, device, name, not_before_ms, not_after_ms, signature, id })
    }

    fn encode_body(identity: &IdentityId, device: &DeviceId, name: &DeviceName, nb: u64, na: u64) -> Writer {
        let mut w = Writer::with_capacity(Self::MAX_ENCODED_LEN);
        w.u8(CERT_FORMAT)
            .raw(identity.as_bytes())
            .raw(device.as_bytes())
            .u64(nb)
            .u64(na)
            .bytes_u8(name.as_str().as_bytes());
        w
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Self::encode_body(&self.identity, &self.device, &self.name, self.not_before_ms, self.not_after_ms);
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// Decodes untrusted bytes (the whole input must be one certificate).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let cert = Self::read(&mut r)?;
        r.finish("device certificate")?;
        Ok(cert)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.position();
        r.format("device certificate", CERT_FORMAT)?;
        let identity = IdentityId::from_bytes(&r.array("certificate identity")?)?;
        let device = DeviceId::from_bytes(&r.array("certificate device")?)?;
        let not_before_ms = r.u64("certificate not-before")?;
        let not_after_ms = r.u64("certificate not-after")?;
        if not_after_ms < not_before_ms {
            return Err(DecodeError::NonCanonical { what: "certificate validity", reason: "ends before it starts" });
        }
        let name = r.str_u8(MAX_DEVICE_NAME_LEN, "device name")?;
        let name = DeviceName::new(name)
            .map_err(|_| DecodeError::NonCanonical { what: "device name", reason: "empty or control characters" })?;
        let body = r.consumed().get(start..).unwrap_or_default();
        let id = Hash::digest(&context::CERTIFICATE_ID, &[body]);
        let signature = r.array("certificate signature")?;
        Ok(Self { identity, device, name, not_before_ms, not_after_ms, signature, id })
    }

    /// Checks the root signature for `identity`.
    pub fn verify(self, identity: &IdentityId) -> Result<VerifiedCertificate, VerifyError> {
        if self.identity != *identity {
            return Err(VerifyError::WrongIdentity { what: "device certificate" });
        }
        let message = signing_message(domain::DEVICE_CERTIFICATE, identity, &self.id);
        if !identity.verify(&message, &self.signature) {
            return Err(VerifyError::BadSignature { what: "device certificate" });
        }
        Ok(VerifiedCertificate::new(self))
    }

    /// The identity it claims to belong to.
    pub fn identity(&self) -> &IdentityId {
        &self.identity
    }

    /// The certified device.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }
}

/// A certificate whose root signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedCertificate {
    cert: DeviceCertificate,
    /// The device key, decompressed once for all the signatures it will check.
    device_key: VerifyingKey,
}

impl VerifiedCertificate {
    fn new(cert: DeviceCertificate) -> Self {
        let device_key = cert.device.verifying_key();
        Self { cert, device_key }
    }

    /// Checks a signature by this device with `verify_strict`.
    pub(crate) fn verify_device_signature(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        verify_strict(&self.device_key, message, signature)
    }

    /// The identity.
    pub fn identity(&self) -> &IdentityId {
        &self.cert.identity
    }
    /// The device.
    pub fn device(&self) -> &DeviceId {
        &self.cert.device
    }
    /// The device's name.
    pub fn name(&self) -> &DeviceName {
        &self.cert.name
    }
    /// Start of validity.
    pub fn not_before_ms(&self) -> u64 {
        self.cert.not_before_ms
    }
    /// End of validity ([`NEVER_EXPIRES`] for none).
    pub fn not_after_ms(&self) -> u64 {
        self.cert.not_after_ms
    }
    /// Hash of the signed body.
    pub fn id(&self) -> Hash {
        self.cert.id
    }
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.cert.encode()
    }
    /// Whether it is valid at `at_ms`.
    pub fn check_validity(&self, at_ms: u64) -> Result<(), VerifyError> {
        if (self.cert.not_before_ms..=self.cert.not_after_ms).contains(&at_ms) {
            Ok(())
        } else {
            Err(VerifyError::Expired {
                device: self.cert.device,
                at_ms,
                not_before_ms: self.cert.not_before_ms,
                not_after_ms: self.cert.not_after_ms,
            })
        }
    }
}

/// A root-signed statement that a device is lost: its writes after `last_valid_seq` are refused.
/// Decoded but **not verified**: call [`Revocation::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    identity: IdentityId,
    device: DeviceId,
    last_valid_seq: u64,
    revoked_at_ms: u64,
    signature: [u8; 64],
    id: Hash,
}

impl Revocation {
    /// Encoded size.
    pub const ENCODED_LEN: usize = 1 + 32 + 32 + 8 + 8 + 64;

    /// Revokes `device`. Its writes numbered up to `last_valid_seq` (those the revoking device had
    /// already seen, so causally before the revocation) stay valid; every later one is refused.
    pub fn issue(
        root: &RootSecretKey,
        device: DeviceId,
        last_valid_seq: u64,
        revoked_at_ms: u64,
    ) -> VerifiedRevocation {
        let identity = root.public();
        let body = Self::encode_body(&identity, &device, last_valid_seq, revoked_at_ms);
        let id = Hash::digest(&context::REVOCATION_ID, &[body.as_bytes()]);
        let signature = root.sign(&signing_message(domain::REVOCATION, &identity, &id));
        VerifiedRevocation(Self { identity, device, last_valid_seq, revoked_at_ms, signature, id })
    }

    fn encode_body(identity: &IdentityId, device: &DeviceId, last_valid_seq: u64, revoked_at_ms: u64) -> Writer {
        let mut w = Writer::with_capacity(Self::ENCODED_LEN);
        w.u8(REVOCATION_FORMAT).raw(identity.as_bytes()).raw(device.as_bytes()).u64(last_valid_seq).u64(revoked_at_ms);
        w
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Self::encode_body(&self.identity, &self.device, self.last_valid_seq, self.revoked_at_ms);
        w.raw(&self.signature);
        w.into_bytes()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let revocation = Self::read(&mut r)?;
        r.finish("revocation")?;
        Ok(revocation)
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let start = r.position();
        r.format("revocation", REVOCATION_FORMAT)?;
        let identity = IdentityId::from_bytes(&r.array("revocation identity")?)?;
        let device = DeviceId::from_bytes(&r.array("revoked device")?)?;
        let last_valid_seq = r.u64("revocation last valid seq")?;
        let revoked_at_ms = r.u64("revocation time")?;
        let body = r.consumed().get(start..).unwrap_or_default();
        let id = Hash::digest(&context::REVOCATION_ID, &[body]);
        let signature = r.array("revocation signature")?;
        Ok(Self { identity, device, last_valid_seq, revoked_at_ms, signature, id })
    }

    /// Checks the root signature for `identity`.
    pub fn verify(self, identity: &IdentityId) -> Result<VerifiedRevocation, VerifyError> {
        if self.identity != *identity {
            return Err(VerifyError::WrongIdentity { what: "revocation" });
        }
        let message = signing_message(domain::REVOCATION, identity, &self.id);
        if !identity.verify(&message, &self.signature) {
            return Err(VerifyError::BadSignature { what: "revocation" });
        }
        Ok(VerifiedRevocation(self))
    }
}

/// A revocation whose root signature has been checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedRevocation(Revocation);

impl VerifiedRevocation {
    /// The identity.
    pub fn identity(&self) -> &IdentityId {
        &self.0.identity
    }
    /// The revoked device.
    pub fn device(&self) -> &DeviceId {
        &self.0.device
    }
    /// The last of the device's writes that stays valid.
    pub fn last_valid_seq(&self) -> u64 {
        self.0.last_valid_seq
    }
    /// When it was issued.
    pub fn revoked_at_ms(&self) -> u64 {
        self.0.revoked_at_ms
    }
    /// Hash of the signed body.
    pub fn id(&self) -> Hash {
        self.0.id
    }
    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode()
    }
}

/// The verified certificates and revocations of one identity.
///
/// Both maps only grow, and each keeps a deterministic choice per device (the latest certificate;
/// the revocation with the smallest `last_valid_seq`), so registries merge like a CRDT.
#[derive(Clone, Debug)]
pub struct DeviceRegistry {
    identity: IdentityId,
    certificates: BTreeMap<DeviceId, VerifiedCertificate>,
    revocations: BTreeMap<DeviceId, VerifiedRevocation>,
}

impl DeviceRegistry {
    /// An empty registry for `identity`.
    pub fn new(identity: IdentityId) -> Self {
        Self { identity, certificates: BTreeMap::new(), revocations: BTreeMap::new() }
    }

    /// The identity.
    pub fn identity(&self) -> &IdentityId {
        &self.identity
    }

    /// Adds a certificate. Returns whether it changed the registry.
    pub fn add_certificate(&mut self, cert: VerifiedCertificate) -> Result<bool, VerifyError> {
        if cert.identity() != &self.identity {
            return Err(VerifyError::WrongIdentity { what: "device certificate" });
        }
        let key = (cert.not_before_ms(), cert.id());
        match self.certificates.get(cert.device()) {
            Some(old) if (old.not_before_ms(), old.id()) >= key => Ok(false),
            _ => {
                self.certificates.insert(*cert.device(), cert);
                Ok(true)
            }
        }
    }

    /// Adds a revocation. Returns whether it changed the registry.
    pub fn add_revocation(&mut self, revocation: VerifiedRevocation) -> Result<bool, VerifyError> {
        if revocation.identity() != &self.identity {
            return Err(VerifyError::WrongIdentity { what: "revocation" });
        }
        let key = (revocation.last_valid_seq(), revocation.id());
        match self.revocations.get(revocation.device()) {
            Some(old) if (old.last_valid_seq(), old.id()) <= key => Ok(false),
            _ => {
                self.revocations.insert(*revocation.device(), revocation);
                Ok(true)
            }
        }
    }

    /// Adds everything `other` holds. Returns whether anything changed.
    pub fn merge(&mut self, other: &DeviceRegistry) -> Result<bool, VerifyError> {
        let mut changed = false;
        for cert in other.certificates.values() {
            changed |= self.add_certificate(cert.clone())?;
        }
        for revocation in other.revocations.values() {
            changed |= self.add_revocation(revocation.clone())?;
        }
        Ok(changed)
    }

    /// The certificate of `device`, if enrolled.
    pub fn certificate(&self, device: &DeviceId) -> Option<&VerifiedCertificate> {
        self.certificates.get(device)
    }

    /// The revocation of `device`, if revoked.
    pub fn revocation(&self, device: &DeviceId) -> Option<&VerifiedRevocation> {
        self.revocations.get(device)
    }

    /// All certificates, by device.
    pub fn certificates(&self) -> impl Iterator<Item = &VerifiedCertificate> {
        self.certificates.values()
    }

    /// All revocations, by device.
    pub fn revocations(&self) -> impl Iterator<Item = &VerifiedRevocation> {
        self.revocations.values()
    }

    /// Whether `device` is enrolled and not revoked.
    pub fn is_active(&self, device: &DeviceId) -> bool {
        self.certificates.contains_key(device) && !self.revocations.contains_key(device)
    }

    /// May `device` sign its write number `seq`, stamped at `at_ms`? Returns its certificate.
    pub fn authorize(&self, device: &DeviceId, seq: u64, at_ms: u64) -> Result<&VerifiedCertificate, VerifyError> {
        let cert = self.certificates.get(device).ok_or(VerifyError::UnknownDevice { device: *device })?;
        if let Some(revocation) = self.revocations.get(device)
            && seq > revocation.last_valid_seq()
        {
            return Err(VerifyError::Revoked { device: *device, last_valid_seq: revocation.last_valid_seq(), seq });
        }
        cert.check_validity(at_ms)?;
        Ok(cert)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DeviceSecretKey;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    #[test]
    fn wrong_domain_tag_is_refused() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let root = RootSecretKey::generate(&mut rng);
        let device = DeviceSecretKey::generate(&mut rng).public();
        let name = DeviceName::new("laptop").unwrap();
        let good = DeviceCertificate::issue(&root, device, name, 0, NEVER_EXPIRES);
        // The same body, signed by the right key under every other domain tag.
        for wrong in [domain::ENVELOPE, domain::REVOCATION, domain::REGISTER_VALUE] {
            let mut forged = good.cert.clone();
            forged.signature = root.sign(&signing_message(wrong, &root.public(), &forged.id));
            let decoded = DeviceCertificate::decode(&forged.encode()).unwrap();
            assert_eq!(decoded.verify(&root.public()), Err(VerifyError::BadSignature { what: "device certificate" }));
        }
        assert!(DeviceCertificate::decode(&good.encode()).unwrap().verify(&root.public()).is_ok());
    }

    #[test]
    fn device_names_are_validated() {
        assert!(DeviceName::new("").is_err());
        assert!(DeviceName::new(&"x".repeat(65)).is_err());
        assert!(DeviceName::new("tab\there").is_err());
        assert_eq!(DeviceName::new("Ada's phone ✓").unwrap().as_str(), "Ada's phone ✓");
    }
}
