//! API credentials: an RSA-2048 signing key per user (OCI API-key auth) and a STOMP
//! passcode, written as an OCI SDK/CLI config file plus a JSON summary.
//! Files are created, never overwritten; private keys are mode 0600.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use berth_core::model::{Tenancy, User};
use berth_core::ocid;
use berth_core::store::Store;
use md5::{Digest, Md5};
use rand::RngCore;
use rsa::pkcs1::EncodeRsaPublicKey;
use rsa::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::RsaPrivateKey;
use serde::Serialize;

/// Name of the tenancy created on first start.
pub const DEFAULT_TENANCY: &str = "default";
/// Name of the user created on first start.
pub const ADMIN_USER: &str = "admin";

/// The summary written to `<user>.json`.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Issued {
    /// Tenancy OCID.
    pub tenancy_id: String,
    /// User OCID.
    pub user_id: String,
    /// Key fingerprint.
    pub fingerprint: String,
    /// Absolute path of the private key.
    pub key_file: PathBuf,
    /// STOMP login: `<tenancy-name>/<user-name>`.
    pub stomp_login: String,
    /// STOMP passcode (stored hashed on the server).
    pub stomp_passcode: String,
    /// The server's endpoint.
    pub endpoint: String,
}

/// OCI's key fingerprint: MD5 of the DER SubjectPublicKeyInfo, colon-separated hex.
pub fn fingerprint(spki_der: &[u8]) -> String {
    Md5::digest(spki_der).iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// How STOMP passcodes are stored and checked: SHA-256, lowercase hex.
pub fn passcode_sha256(passcode: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, passcode.as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a new file; fails if it exists. `private` files are mode 0600.
fn create_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true).mode(if private { 0o600 } else { 0o644 });
    let mut file =
        options.open(path).with_context(|| format!("cannot create {} (it is never overwritten)", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}

/// Creates a user of `tenancy` with a fresh key and passcode, and writes
/// `out/oci-config`, `out/<user>.json` and `out/<user>_key.pem`.
///
/// # Errors
/// If the user exists, a file exists, or the store fails.
pub async fn issue(
    store: &dyn Store,
    tenancy: &Tenancy,
    user_name: &str,
    out: &Path,
    endpoint: &str,
    region: &str,
) -> anyhow::Result<Issued> {
    if user_name.is_empty() || user_name.contains(['/', ' ']) {
        anyhow::bail!("user name {user_name:?} must be non-empty without '/' or spaces");
    }
    if store.user_by_name(&tenancy.name, user_name).await?.is_some() {
        anyhow::bail!("user {user_name:?} already exists in tenancy {:?}", tenancy.name);
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let out = std::fs::canonicalize(out)?;
    let key_file = out.join(format!("{user_name}_key.pem"));
    let config_file = out.join("oci-config");
    let json_file = out.join(format!("{user_name}.json"));
    for path in [&key_file, &config_file, &json_file] {
        if path.exists() {
            anyhow::bail!("{} exists; credentials are never overwritten", path.display());
        }
    }

    let key = tokio::task::spawn_blocking(|| RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048)).await??;
    let public = key.to_public_key();
    let spki = public.to_public_key_der()?;
    let fingerprint = fingerprint(spki.as_bytes());
    let mut secret = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    let passcode = STANDARD.encode(secret);
    let user = User {
        id: ocid::new("user", "", "aaaaaaaa"),
        tenancy_id: tenancy.id.clone(),
        name: user_name.to_owned(),
        fingerprint: fingerprint.clone(),
        public_key_der: public.to_pkcs1_der()?.as_bytes().to_vec(),
        stomp_passcode_sha256: passcode_sha256(&passcode),
    };

    create_file(&key_file, key.to_pkcs8_pem(LineEnding::LF)?.as_bytes(), true)?;
    let config = format!(
        "[DEFAULT]\nuser={}\nfingerprint={}\nkey_file={}\ntenancy={}\nregion={}\n",
        user.id,
        fingerprint,
        key_file.display(),
        tenancy.id,
        region
    );
    create_file(&config_file, config.as_bytes(), true)?;
    let issued = Issued {
        tenancy_id: tenancy.id.clone(),
        user_id: user.id.clone(),
        fingerprint,
        key_file,
        stomp_login: format!("{}/{}", tenancy.name, user_name),
        stomp_passcode: passcode,
        endpoint: endpoint.to_owned(),
    };
    create_file(&json_file, &serde_json::to_vec_pretty(&issued)?, true)?;
    if !store.insert_user(&user).await? {
        // Another process added the name meanwhile: these files would name no user.
        for path in [&issued.key_file, &config_file, &json_file] {
            let _ = std::fs::remove_file(path);
        }
        anyhow::bail!("user {user_name:?} already exists in tenancy {:?}", tenancy.name);
    }
    Ok(issued)
}

/// The tenancy with this name, created if new.
pub async fn tenancy(store: &dyn Store, name: &str) -> anyhow::Result<Tenancy> {
    if name.is_empty() || name.contains(['/', ' ']) {
        anyhow::bail!("tenancy name {name:?} must be non-empty without '/' or spaces");
    }
    Ok(store.ensure_tenancy(name, &ocid::new("tenancy", "", "aaaaaaaa")).await?)
}

/// First start: creates the default tenancy and its admin user, writing
/// `DATA_DIR/credentials/{oci-config,admin.json}`. Returns the default tenancy.
///
/// # Errors
/// When the store fails or files cannot be written.
pub async fn bootstrap(store: &dyn Store, data_dir: &Path, region: &str, endpoint: &str) -> anyhow::Result<Tenancy> {
    let tenancy = tenancy(store, DEFAULT_TENANCY).await?;
    let dir = data_dir.join("credentials");
    if store.user_by_name(DEFAULT_TENANCY, ADMIN_USER).await?.is_none() {
        if dir.join("oci-config").exists() {
            tracing::warn!(dir = %dir.display(), "credentials exist but the store has no admin user; leaving them alone");
        } else {
            match issue(store, &tenancy, ADMIN_USER, &dir, endpoint, region).await {
                Ok(_) => tracing::info!(dir = %dir.display(), "created the default tenancy and its admin credentials"),
                // Nodes started at once on a new database: one of them made the admin.
                Err(_) if store.user_by_name(DEFAULT_TENANCY, ADMIN_USER).await?.is_some() => {
                    tracing::info!(
                        "another node created the admin user at the same time; its data dir holds the credentials"
                    );
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(tenancy)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprint_is_colon_separated_md5() {
        let fp = super::fingerprint(b"abc");
        assert_eq!(fp, "90:01:50:98:3c:d2:4f:b0:d6:96:3f:7d:28:e1:7f:72");
    }
}
