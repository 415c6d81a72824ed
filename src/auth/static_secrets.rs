//! Static secrets from `[[credentials]]`: bearer tokens, app-id/app-token pairs and Basic
//! user/password pairs (SPEC §5, §13.7), kept only as SHA-256 digests and compared in
//! constant time.

use super::Credential;
use crate::config::{CredentialSettings, SecretSettings};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub struct StaticSecrets {
    bearer: Vec<([u8; 32], Arc<Credential>)>,
    app_pairs: Vec<(String, [u8; 32], Arc<Credential>)>,
    basic: Vec<(String, [u8; 32], Arc<Credential>)>,
}

pub fn sha256(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl StaticSecrets {
    pub fn from_config(creds: &[CredentialSettings]) -> StaticSecrets {
        let mut bearer = Vec::new();
        let mut app_pairs = Vec::new();
        let mut basic = Vec::new();
        for c in creds {
            let credential = Arc::new(Credential {
                name: Arc::from(c.name.as_str()),
                admin: c.admin,
                applications: c.applications.clone(),
            });
            match &c.secret {
                SecretSettings::Bearer { token_sha256 } => bearer.push((*token_sha256, credential)),
                SecretSettings::AppPair {
                    app_id,
                    app_token_sha256,
                } => app_pairs.push((app_id.clone(), *app_token_sha256, credential)),
                SecretSettings::Basic {
                    user,
                    password_sha256,
                } => basic.push((user.clone(), *password_sha256, credential)),
            }
        }
        StaticSecrets {
            bearer,
            app_pairs,
            basic,
        }
    }

    /// The credential whose token hashes to the same digest. Every stored digest is compared,
    /// in constant time, so timing reveals nothing about which one (if any) matched.
    pub fn bearer(&self, token: &[u8]) -> Option<Arc<Credential>> {
        let digest = sha256(token);
        let mut found = None;
        for (stored, cred) in &self.bearer {
            if bool::from(stored.ct_eq(&digest)) {
                found = Some(cred.clone());
            }
        }
        found
    }

    /// The credential with this app id whose token matches.
    pub fn app_pair(&self, app_id: &[u8], token: &[u8]) -> Option<Arc<Credential>> {
        id_and_secret(&self.app_pairs, app_id, token)
    }

    /// The Basic credential with this user whose password matches.
    pub fn basic(&self, user: &[u8], password: &[u8]) -> Option<Arc<Credential>> {
        id_and_secret(&self.basic, user, password)
    }
}

/// The entry whose id equals `id` and whose digest is the SHA-256 of `secret`. Every entry is
/// compared, each in constant time, so timing tells nothing about which one matched.
fn id_and_secret(
    entries: &[(String, [u8; 32], Arc<Credential>)],
    id: &[u8],
    secret: &[u8],
) -> Option<Arc<Credential>> {
    let digest = sha256(secret);
    let mut found = None;
    for (stored_id, stored, cred) in entries {
        let id_ok = stored_id.as_bytes().ct_eq(id);
        let secret_ok = stored.ct_eq(&digest);
        if bool::from(id_ok & secret_ok) {
            found = Some(cred.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApplicationAccess;

    fn secrets() -> StaticSecrets {
        StaticSecrets::from_config(&[
            CredentialSettings {
                name: "web".into(),
                secret: SecretSettings::Bearer {
                    token_sha256: sha256(b"s3cret-token"),
                },
                applications: ApplicationAccess::All,
                admin: false,
            },
            CredentialSettings {
                name: "box-office".into(),
                secret: SecretSettings::Basic {
                    user: "api:web:TNMP_WEB".into(),
                    password_sha256: sha256(b"pa:ss"),
                },
                applications: ApplicationAccess::All,
                admin: false,
            },
            CredentialSettings {
                name: "pos".into(),
                secret: SecretSettings::AppPair {
                    app_id: "pos-1".into(),
                    app_token_sha256: sha256(b"pos-token"),
                },
                applications: ApplicationAccess::All,
                admin: false,
            },
        ])
    }

    #[test]
    fn bearer_exact_match_only() {
        let s = secrets();
        assert_eq!(
            s.bearer(b"s3cret-token").map(|c| c.name.to_string()),
            Some("web".into())
        );
        for bad in [
            &b"s3cret-toke"[..],
            b"s3cret-token1",
            b"S3CRET-TOKEN",
            b"",
            b"xs3cret-token",
        ] {
            assert!(
                s.bearer(bad).is_none(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn app_pair_needs_both() {
        let s = secrets();
        assert!(s.app_pair(b"pos-1", b"pos-token").is_some());
        assert!(s.app_pair(b"pos-1", b"wrong").is_none());
        assert!(s.app_pair(b"pos-2", b"pos-token").is_none());
        assert!(s.app_pair(b"pos-1", b"s3cret-token").is_none());
    }

    #[test]
    fn basic_needs_user_and_password() {
        let s = secrets();
        assert_eq!(
            s.basic(b"api:web:TNMP_WEB", b"pa:ss")
                .map(|c| c.name.to_string()),
            Some("box-office".into())
        );
        assert!(s.basic(b"api:web:TNMP_WEB", b"pa:s").is_none());
        assert!(s.basic(b"api:web", b"TNMP_WEB:pa:ss").is_none());
        assert!(
            s.basic(b"pos-1", b"pos-token").is_none(),
            "app pairs are not Basic users"
        );
    }
}
