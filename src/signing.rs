//! Signed output URLs: `?exp=<unix>&sig=<hex>` where the signature is an
//! HMAC-SHA256 over the owner, the output's path and the expiry, so a link
//! works for that output of that video of that owner until it expires, and
//! for nothing else.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// Why a signed request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    Expired,
    Invalid,
}

impl Signer {
    pub fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, owner: &str, path: &str, exp: u64) -> HmacSha256 {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(owner.as_bytes());
        mac.update(b"\n");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The `exp` and `sig` query values for `path`, valid until `exp`.
    pub fn sign(&self, owner: &str, path: &str, exp: u64) -> String {
        hex::encode(self.mac(owner, path, exp).finalize().into_bytes())
    }

    /// Checks a signature in constant time, then the expiry.
    pub fn verify(
        &self,
        owner: &str,
        path: &str,
        exp: u64,
        sig: &str,
        now: u64,
    ) -> Result<(), SignatureError> {
        let bytes = hex::decode(sig).map_err(|_| SignatureError::Invalid)?;
        self.mac(owner, path, exp)
            .verify_slice(&bytes)
            .map_err(|_| SignatureError::Invalid)?;
        if now > exp {
            return Err(SignatureError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PATH: &str = "/v1/videos/01J/video.mp4";

    #[test]
    fn a_signature_binds_owner_path_and_expiry() {
        let s = Signer::new(b"key");
        let sig = s.sign("alice", PATH, 1000);
        assert_eq!(s.verify("alice", PATH, 1000, &sig, 999), Ok(()));
        assert_eq!(
            s.verify("alice", PATH, 1000, &sig, 1001),
            Err(SignatureError::Expired)
        );
        assert_eq!(
            s.verify("bob", PATH, 1000, &sig, 999),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify("alice", "/v1/videos/01J/frames.zip", 1000, &sig, 999),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify("alice", "/v1/videos/02K/video.mp4", 1000, &sig, 999),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify("alice", PATH, 2000, &sig, 999),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            Signer::new(b"other").verify("alice", PATH, 1000, &sig, 999),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            s.verify("alice", PATH, 1000, "zz", 999),
            Err(SignatureError::Invalid)
        );
    }

    proptest! {
        #[test]
        fn any_change_to_a_signature_is_refused(flip in 0usize..64, owner in "[a-z]{1,12}", exp in 1u64..u64::MAX / 2) {
            let s = Signer::new(b"key");
            let sig = s.sign(&owner, PATH, exp);
            let mut bytes: Vec<char> = sig.chars().collect();
            bytes[flip] = if bytes[flip] == '0' { '1' } else { '0' };
            let tampered: String = bytes.into_iter().collect();
            prop_assert_eq!(s.verify(&owner, PATH, exp, &tampered, 0), Err(SignatureError::Invalid));
            prop_assert_eq!(s.verify(&owner, PATH, exp, &sig, 0), Ok(()));
        }
    }
}
