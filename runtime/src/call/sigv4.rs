//! AWS Signature Version 4: signs a request with an access key for a
//! region and service (`Authorization: AWS4-HMAC-SHA256 …`).
//!
//! The canonical request covers the method, the URI-encoded path, the
//! sorted query, the `host`, `content-type` and `x-amz-*` headers, and the
//! SHA-256 of the body; the signing key is derived from the secret, the
//! date, the region and the service.

use aws_lc_rs::{digest, hmac};

/// What signing needs besides the request.
pub struct Credentials<'a> {
    /// `AKIA…`.
    pub access_key_id: &'a str,
    /// The secret access key.
    pub secret_access_key: &'a str,
    /// A session token for temporary credentials (empty for none).
    pub session_token: &'a str,
    /// e.g. `eu-central-1`.
    pub region: &'a str,
    /// e.g. `execute-api`, `s3`.
    pub service: &'a str,
}

fn hex_sha256(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

fn hmac_sha256(key: &[u8], data: &str) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        .as_ref()
        .to_vec()
}

/// RFC 3986 encoding as SigV4 wants it (unreserved characters kept).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The headers to add to sign a request made at `amz_date`
/// (`20150830T123600Z`). `headers` are the request's own headers.
#[allow(clippy::too_many_arguments)]
pub fn sign(
    method: &str,
    url: &reqwest::Url,
    headers: &[(String, String)],
    body: &[u8],
    creds: &Credentials<'_>,
    amz_date: &str,
    content_sha256_header: bool,
) -> Vec<(String, String)> {
    let date = &amz_date[..8];
    let payload_hash = hex_sha256(body);
    let mut added = vec![("x-amz-date".to_owned(), amz_date.to_owned())];
    if content_sha256_header {
        added.push(("x-amz-content-sha256".to_owned(), payload_hash.clone()));
    }
    if !creds.session_token.is_empty() {
        added.push((
            "x-amz-security-token".to_owned(),
            creds.session_token.to_owned(),
        ));
    }
    let host = match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let mut signed: Vec<(String, String)> = vec![("host".into(), host)];
    for (k, v) in headers.iter().chain(added.iter()) {
        let k = k.to_ascii_lowercase();
        if k == "content-type" || k.starts_with("x-amz-") {
            signed.push((k, v.split_whitespace().collect::<Vec<_>>().join(" ")));
        }
    }
    signed.sort();
    signed.dedup_by(|a, b| a.0 == b.0);
    let canonical_headers: String = signed.iter().map(|(k, v)| format!("{k}:{v}\n")).collect();
    let signed_headers = signed
        .iter()
        .map(|(k, _)| k.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let mut query: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| (encode(&k, false), encode(&v, false)))
        .collect();
    query.sort();
    let canonical_query = query
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let path = if url.path().is_empty() {
        "/"
    } else {
        url.path()
    };
    // The URL keeps its own percent-encoding; decode once so it is encoded exactly once.
    let decoded: String = percent_decode(path);
    let canonical_request = format!(
        "{}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        method.to_ascii_uppercase(),
        encode(&decoded, true),
    );
    let scope = format!("{date}/{}/{}/aws4_request", creds.region, creds.service);
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        hex_sha256(canonical_request.as_bytes())
    );
    let k_date = hmac_sha256(format!("AWS4{}", creds.secret_access_key).as_bytes(), date);
    let k_region = hmac_sha256(&k_date, creds.region);
    let k_service = hmac_sha256(&k_region, creds.service);
    let k_signing = hmac_sha256(&k_service, "aws4_request");
    let signature = hex::encode(hmac_sha256(&k_signing, &string_to_sign));
    added.push((
        "authorization".to_owned(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            creds.access_key_id
        ),
    ));
    added
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Now as `20150830T123600Z`.
pub fn amz_date_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: Credentials<'static> = Credentials {
        access_key_id: "AKIDEXAMPLE",
        secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        session_token: "",
        region: "us-east-1",
        service: "service",
    };

    fn authorization(method: &str, url: &str) -> String {
        let url = reqwest::Url::parse(url).unwrap();
        let added = sign(method, &url, &[], b"", &EXAMPLE, "20150830T123600Z", false);
        added
            .into_iter()
            .find(|(k, _)| k == "authorization")
            .unwrap()
            .1
    }

    /// The `get-vanilla` and `get-vanilla-query-order-key-case` cases of
    /// AWS's published Signature Version 4 test suite.
    #[test]
    fn matches_the_aws_test_suite() {
        assert_eq!(
            authorization("GET", "https://example.amazonaws.com/"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
        assert_eq!(
            authorization(
                "GET",
                "https://example.amazonaws.com/?Param2=value2&Param1=value1"
            ),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"
        );
    }

    #[test]
    fn session_tokens_and_payload_hashes_are_signed() {
        let url = reqwest::Url::parse("https://api.example.com/v1/cars").unwrap();
        let creds = Credentials {
            session_token: "session",
            ..EXAMPLE
        };
        let added = sign(
            "POST",
            &url,
            &[("Content-Type".into(), "application/json".into())],
            b"{}",
            &creds,
            "20150830T123600Z",
            true,
        );
        let auth = &added.iter().find(|(k, _)| k == "authorization").unwrap().1;
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert!(
            added
                .iter()
                .any(|(k, v)| k == "x-amz-security-token" && v == "session")
        );
    }
}
