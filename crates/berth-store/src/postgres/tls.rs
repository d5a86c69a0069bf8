//! TLS to PostgreSQL with libpq's `sslmode` and `sslrootcert` (rustls).
//!
//! tokio-postgres knows `sslmode` disable, prefer and require only and rejects keys it does
//! not know, so Berth takes the TLS keys out of the URL and applies them itself, as libpq
//! does: `prefer` (the default) and `require` encrypt without checking the server's
//! certificate unless `sslrootcert` names a CA file; `verify-ca` checks the chain against
//! it; `verify-full` also checks that the certificate names the host.

use std::sync::Arc;

use berth_core::error::StoreError;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// What Berth makes of a PostgreSQL URL: the connection settings and how TLS is done.
pub(crate) struct Connection {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Nothing,
    Chain,
    ChainAndHost,
}

/// Parses a libpq-style URL (`postgres://…?sslmode=…`) or key=value string.
pub(crate) fn connection(url: &str) -> Result<Connection, StoreError> {
    let (rest, keys) = take_tls_keys(url);
    let bad = |e: String| StoreError::Backend(format!("bad PostgreSQL URL: {e}"));
    let mut config: tokio_postgres::Config = rest.parse().map_err(|e| bad(super::with_causes(&e)))?;
    let mut mode = "prefer".to_string();
    let mut root = None;
    for (key, value) in keys {
        match key.as_str() {
            "sslmode" => mode = value,
            "sslrootcert" => root = Some(value),
            _ => return Err(bad(format!("{key} (client certificates) is not supported"))),
        }
    }
    let (ssl_mode, mut check) = match mode.as_str() {
        "disable" => (SslMode::Disable, Check::Nothing),
        "prefer" => (SslMode::Prefer, Check::Nothing),
        "require" => (SslMode::Require, Check::Nothing),
        "verify-ca" => (SslMode::Require, Check::Chain),
        "verify-full" => (SslMode::Require, Check::ChainAndHost),
        other => {
            return Err(bad(format!(
                "sslmode {other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )))
        }
    };
    config.ssl_mode(ssl_mode);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match root {
        Some(path) => {
            // As libpq: a CA file given makes prefer and require check the chain too.
            if check == Check::Nothing && ssl_mode != SslMode::Disable {
                check = Check::Chain;
            }
            let roots = Arc::new(roots_from(&path)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                .build()
                .map_err(|e| bad(format!("sslrootcert {path}: {e}")))?;
            match check {
                Check::ChainAndHost => webpki,
                _ => Arc::new(AnyHostName(webpki)),
            }
        }
        None if check != Check::Nothing => {
            return Err(bad(format!("sslmode={mode} needs sslrootcert=FILE (the CA certificates, PEM)")));
        }
        None => Arc::new(Unchecked(provider.signature_verification_algorithms)),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("{e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Connection { config, tls: MakeRustlsConnect::new(tls) })
}

const TLS_KEYS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Splits the TLS keys off a URL or key=value string; the rest is left as it was written.
fn take_tls_keys(url: &str) -> (String, Vec<(String, String)>) {
    let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
    let mut taken = Vec::new();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else { return (url.to_string(), taken) };
        let mut kept = Vec::new();
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if TLS_KEYS.contains(&decode(key).as_str()) {
                taken.push((decode(key), decode(value)));
            } else {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() { base.to_string() } else { format!("{base}?{}", kept.join("&")) };
        (rest, taken)
    } else {
        // Unparseable: left whole, for tokio-postgres to say what is wrong.
        let Some(pairs) = conninfo_pairs(url) else { return (url.to_string(), taken) };
        let mut rest = String::new();
        let mut from = 0;
        for (key, value, span) in pairs {
            if TLS_KEYS.contains(&key.as_str()) {
                rest.push_str(url[from..span.start].trim_end());
                from = span.end;
                taken.push((key, value));
            }
        }
        rest.push_str(&url[from..]);
        (rest.trim().to_string(), taken)
    }
}

/// The pairs of a libpq key=value string (`key = value`, spaces around `=` allowed, values
/// single-quoted or not, with backslash escapes), each with its span in the string.
fn conninfo_pairs(text: &str) -> Option<Vec<(String, String, std::ops::Range<usize>)>> {
    let mut pairs = Vec::new();
    let mut chars = text.char_indices().peekable();
    let skip_spaces = |chars: &mut std::iter::Peekable<std::str::CharIndices<'_>>| {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
    };
    loop {
        skip_spaces(&mut chars);
        let Some(&(start, _)) = chars.peek() else { return Some(pairs) };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        skip_spaces(&mut chars);
        chars.next_if(|(_, c)| *c == '=')?;
        skip_spaces(&mut chars);
        let quoted = chars.next_if(|(_, c)| *c == '\'').is_some();
        let mut value = String::new();
        let mut end = text.len();
        loop {
            match chars.peek().copied() {
                None if quoted => return None,
                None => break,
                Some((i, c)) if !quoted && c.is_whitespace() => {
                    end = i;
                    break;
                }
                Some((i, '\'')) if quoted => {
                    chars.next();
                    end = i + 1;
                    break;
                }
                Some((_, '\\')) => {
                    chars.next();
                    value.push(chars.next()?.1);
                }
                Some((_, c)) => {
                    chars.next();
                    value.push(c);
                }
            }
        }
        pairs.push((key, value, start..end));
    }
}

fn roots_from(path: &str) -> Result<RootCertStore, StoreError> {
    let bad = |e: String| StoreError::Backend(format!("bad PostgreSQL URL: sslrootcert {path}: {e}"));
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots.add(cert.map_err(|e| bad(e.to_string()))?).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in it".into()));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a trusted CA; the host name is not checked.
#[derive(Debug)]
struct AnyHostName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyHostName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// `prefer` and `require` without a CA file: encrypted, but any certificate is taken (libpq's
/// meaning; it does not guard against a man in the middle).
#[derive(Debug)]
struct Unchecked(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken(url: &str) -> (String, Vec<(String, String)>) {
        take_tls_keys(url)
    }

    #[test]
    fn tls_keys_leave_the_rest_of_a_url_as_written() {
        let (rest, keys) =
            taken("postgres://b@h:5/db?options=-csearch_path%3Dx&sslmode=verify-full&sslrootcert=%2Ftmp%2Fca.pem");
        assert_eq!(rest, "postgres://b@h:5/db?options=-csearch_path%3Dx");
        assert_eq!(keys, [("sslmode".into(), "verify-full".into()), ("sslrootcert".into(), "/tmp/ca.pem".into())]);
        assert_eq!(taken("postgresql://h/db?sslmode=disable").0, "postgresql://h/db");
        assert_eq!(taken("postgres://h/db").0, "postgres://h/db");
    }

    #[test]
    fn tls_keys_come_out_of_a_key_value_string() {
        let (rest, keys) = taken("host=h user=b sslmode=require dbname=d");
        assert_eq!(rest, "host=h user=b dbname=d");
        assert_eq!(keys, [("sslmode".into(), "require".into())]);
        // Quoted values keep their spaces; spaces may stand around `=`.
        let (rest, keys) = taken(r"host=h password='a  b\'c' sslmode = verify-ca sslrootcert='/tmp/my ca.pem'");
        assert_eq!(rest, r"host=h password='a  b\'c'");
        assert_eq!(keys, [("sslmode".into(), "verify-ca".into()), ("sslrootcert".into(), "/tmp/my ca.pem".into())]);
        assert_eq!(taken("host=h password='unclosed").0, "host=h password='unclosed", "left to tokio-postgres");
        let config = connection(r"host=h password='a  b' sslmode = disable").unwrap().config;
        assert_eq!(config.get_password(), Some(&b"a  b"[..]));
        assert_eq!(config.get_ssl_mode(), SslMode::Disable);
    }

    #[test]
    fn a_mode_that_checks_certificates_needs_a_ca_file() {
        for url in ["postgres://h/db?sslmode=verify-ca", "postgres://h/db?sslmode=verify-full"] {
            let error = connection(url).err().expect("refused").to_string();
            assert!(error.contains("needs sslrootcert"), "{error}");
        }
        let error = connection("postgres://h/db?sslmode=maybe").err().expect("refused").to_string();
        assert!(error.contains("not one of disable"), "{error}");
        let error = connection("postgres://h/db?sslcert=c.pem").err().expect("refused").to_string();
        assert!(error.contains("not supported"), "{error}");
        let error = connection("postgres://h/db?sslmode=verify-full&sslrootcert=/nonexistent.pem")
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("/nonexistent.pem"), "{error}");
    }

    #[test]
    fn modes_map_to_what_tokio_postgres_negotiates() {
        let mode = |url: &str| connection(url).map(|c| c.config.get_ssl_mode()).unwrap();
        assert_eq!(mode("postgres://h/db"), SslMode::Prefer);
        assert_eq!(mode("postgres://h/db?sslmode=disable"), SslMode::Disable);
        assert_eq!(mode("postgres://h/db?sslmode=require"), SslMode::Require);
    }
}
