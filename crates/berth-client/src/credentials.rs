//! Who signs: from the JSON file Berth writes for each user, or an OCI config file.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

/// A user's API key and where it is.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The tenancy's OCID.
    pub tenancy_id: String,
    /// The user's OCID.
    pub user_id: String,
    /// The key's fingerprint.
    pub fingerprint: String,
    /// The private key (PEM).
    pub key_file: PathBuf,
    /// The endpoint the file names, if any (Berth's files do; OCI configs do not).
    pub endpoint: Option<String>,
}

impl Credentials {
    /// From `credentials/<user>.json` as Berth writes it.
    ///
    /// # Errors
    /// The file cannot be read or lacks a field.
    pub fn from_berth_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let json: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a Berth credentials file", path.display()))?;
        let field = |key: &str| {
            json.get(key)
                .and_then(Value::as_str)
                .map(str::to_owned)
                .with_context(|| format!("{} has no {key}", path.display()))
        };
        Ok(Credentials {
            tenancy_id: field("tenancyId")?,
            user_id: field("userId")?,
            fingerprint: field("fingerprint")?,
            key_file: field("keyFile")?.into(),
            endpoint: field("endpoint").ok(),
        })
    }

    /// From an OCI config file (`~/.oci/config` style), the named profile; a key not in the
    /// profile comes from `[DEFAULT]`, as in the SDKs.
    ///
    /// # Errors
    /// The file cannot be read, or the profile lacks a key.
    pub fn from_oci_config(path: &Path, profile: &str) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let (mut section, mut default, mut chosen) = (String::new(), Vec::new(), Vec::new());
        let mut found = false;
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with(['#', ';'])) {
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_owned();
                found |= section == profile;
            } else if let Some((key, value)) = line.split_once('=') {
                let pair = (key.trim().to_owned(), value.trim().to_owned());
                if section == "DEFAULT" {
                    default.push(pair.clone());
                }
                if section == profile && profile != "DEFAULT" {
                    chosen.push(pair);
                }
            }
        }
        if !found {
            anyhow::bail!("{} has no profile [{profile}]", path.display());
        }
        let value = |key: &str| {
            chosen
                .iter()
                .chain(default.iter())
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .with_context(|| format!("profile [{profile}] of {} has no {key}", path.display()))
        };
        let key_file = value("key_file")?;
        let key_file = match key_file.strip_prefix("~/") {
            Some(rest) => {
                std::env::var_os("HOME").map_or_else(|| PathBuf::from(&key_file), |h| Path::new(&h).join(rest))
            }
            None => PathBuf::from(key_file),
        };
        Ok(Credentials {
            tenancy_id: value("tenancy")?,
            user_id: value("user")?,
            fingerprint: value("fingerprint")?,
            key_file,
            endpoint: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_falls_back_to_default_keys() {
        let dir = std::env::temp_dir().join(format!("berth-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config");
        std::fs::write(
            &path,
            "[DEFAULT]\nuser=u1\nfingerprint=f1\nkey_file=/k1\ntenancy=t1\n\n# comment\n[OTHER]\nuser = u2\n",
        )
        .unwrap();
        let default = Credentials::from_oci_config(&path, "DEFAULT").unwrap();
        assert_eq!((default.user_id.as_str(), default.tenancy_id.as_str()), ("u1", "t1"));
        let other = Credentials::from_oci_config(&path, "OTHER").unwrap();
        assert_eq!((other.user_id.as_str(), other.fingerprint.as_str()), ("u2", "f1"));
        assert_eq!(other.key_file, PathBuf::from("/k1"));
        let missing = Credentials::from_oci_config(&path, "NONE").unwrap_err().to_string();
        assert!(missing.contains("no profile [NONE]"), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
