//! OCI request signatures (draft-cavage-http-signatures-08, "Signature Version 1"):
//! parsing the `authorization` header and rebuilding the signing string. Pure functions.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Why a request's signature was refused. The text is for logs; clients only see 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No `authorization` header.
    #[error("the request is not signed")]
    Missing,
    /// The header is not a well-formed OCI signature.
    #[error("malformed authorization header: {0}")]
    Malformed(&'static str),
    /// A header the method requires is not signed or not present.
    #[error("header {0:?} must be present and signed")]
    Unsigned(String),
    /// `date` is too far from the server's clock.
    #[error("the date header is more than 5 minutes off")]
    Skew,
    /// `x-content-sha256` or `content-length` does not match the body.
    #[error("the body does not match its signed digest or length")]
    BodyMismatch,
    /// No such key.
    #[error("unknown key id")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
}

/// The parsed `authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub struct SignatureHeader {
    /// Tenancy OCID from the key id.
    pub tenancy_id: String,
    /// User OCID from the key id.
    pub user_id: String,
    /// Key fingerprint from the key id.
    pub fingerprint: String,
    /// Signed header names, lowercase, in order.
    pub headers: Vec<String>,
    /// The signature bytes.
    pub signature: Vec<u8>,
}

/// Headers every signed request must cover, by method (reference section 5.1).
pub fn required_headers(method: &str) -> &'static [&'static str] {
    match method {
        "POST" | "PUT" | "PATCH" => {
            &["date", "(request-target)", "host", "content-length", "content-type", "x-content-sha256"]
        }
        _ => &["date", "(request-target)", "host"],
    }
}

/// Parses `Signature k="v",...` (parameters in any order).
///
/// # Errors
/// `Malformed` when a part is missing or not understood.
pub fn parse(header: &str) -> Result<SignatureHeader, SignatureError> {
    let params = header.strip_prefix("Signature ").ok_or(SignatureError::Malformed("expected the Signature scheme"))?;
    let (mut key_id, mut headers, mut signature, mut algorithm, mut version) = (None, None, None, None, None);
    for part in params.split(',') {
        let (name, value) = part.trim().split_once('=').ok_or(SignatureError::Malformed("expected name=\"value\""))?;
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or(SignatureError::Malformed("values must be quoted"))?;
        match name {
            "keyId" => key_id = Some(value),
            "headers" => headers = Some(value),
            "signature" => signature = Some(value),
            "algorithm" => algorithm = Some(value),
            "version" => version = Some(value),
            _ => {}
        }
    }
    if algorithm.is_some_and(|a| a != "rsa-sha256") {
        return Err(SignatureError::Malformed("only rsa-sha256 is supported"));
    }
    if version.is_some_and(|v| v != "1") {
        return Err(SignatureError::Malformed("only signature version 1 is supported"));
    }
    let key_id = key_id.ok_or(SignatureError::Malformed("keyId is missing"))?;
    let mut key_parts = key_id.split('/');
    let (Some(tenancy_id), Some(user_id), Some(fingerprint), None) =
        (key_parts.next(), key_parts.next(), key_parts.next(), key_parts.next())
    else {
        return Err(SignatureError::Malformed("keyId must be tenancy/user/fingerprint"));
    };
    let signature = STANDARD
        .decode(signature.ok_or(SignatureError::Malformed("signature is missing"))?)
        .map_err(|_| SignatureError::Malformed("signature is not base64"))?;
    let headers = headers.unwrap_or("date").split_ascii_whitespace().map(str::to_ascii_lowercase).collect();
    Ok(SignatureHeader {
        tenancy_id: tenancy_id.to_owned(),
        user_id: user_id.to_owned(),
        fingerprint: fingerprint.to_owned(),
        headers,
        signature,
    })
}

/// Builds the signing string from the signed header names. `lookup` gives a header's
/// value as sent; `request_target` is `<lowercase method> <raw path and query>`.
///
/// # Errors
/// `Unsigned` when a required header is not in the list or not in the request.
pub fn signing_string<'a>(
    signed: &[String],
    method: &str,
    request_target: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, SignatureError> {
    for required in required_headers(method) {
        let covered =
            signed.iter().any(|h| h == required) || (*required == "date" && signed.iter().any(|h| h == "x-date"));
        if !covered {
            return Err(SignatureError::Unsigned((*required).to_owned()));
        }
    }
    let mut lines = Vec::with_capacity(signed.len());
    for name in signed {
        let value = if name == "(request-target)" {
            request_target
        } else {
            lookup(name).ok_or_else(|| SignatureError::Unsigned(name.clone()))?
        };
        lines.push(format!("{name}: {value}"));
    }
    Ok(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = r#"Signature algorithm="rsa-sha256",headers="date (request-target) host",keyId="ocid1.tenancy.oc1..t/ocid1.user.oc1..u/9e:50:98",signature="AAEC",version="1""#;

    #[test]
    fn python_sdk_authorization_header_parses() {
        let parsed = parse(HEADER).unwrap();
        assert_eq!(parsed.tenancy_id, "ocid1.tenancy.oc1..t");
        assert_eq!(parsed.user_id, "ocid1.user.oc1..u");
        assert_eq!(parsed.fingerprint, "9e:50:98");
        assert_eq!(parsed.headers, ["date", "(request-target)", "host"]);
        assert_eq!(parsed.signature, [0, 1, 2]);
    }

    #[test]
    fn signing_string_follows_the_signed_header_order() {
        let signed: Vec<String> = ["date", "(request-target)", "host"].map(String::from).to_vec();
        let s = signing_string(&signed, "GET", "get /20210201/queues?limit=1", |name| match name {
            "date" => Some("Mon, 23 Nov 2026 04:03:06 GMT"),
            "host" => Some("127.0.0.1:8080"),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            s,
            "date: Mon, 23 Nov 2026 04:03:06 GMT\n(request-target): get /20210201/queues?limit=1\nhost: 127.0.0.1:8080"
        );
    }

    #[test]
    fn body_request_without_signed_digest_is_refused() {
        let signed: Vec<String> = ["date", "(request-target)", "host"].map(String::from).to_vec();
        let err = signing_string(&signed, "POST", "post /x", |_| Some("v")).unwrap_err();
        assert_eq!(err, SignatureError::Unsigned("content-length".into()));
    }

    #[test]
    fn malformed_headers_are_refused() {
        for bad in ["Basic abc", "Signature keyId=x", r#"Signature keyId="a/b",signature="AA==""#] {
            assert!(matches!(parse(bad), Err(SignatureError::Malformed(_))), "{bad}");
        }
    }
}
