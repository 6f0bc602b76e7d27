//! AWS Signature Version 4, verified on the server.
//!
//! The client signs a canonical form of the request with a key derived
//! from its secret, the date, the region and the service; the server
//! rebuilds the same canonical form from what arrived and checks the HMAC.
//! Any change to a signed header or the body breaks the signature. The
//! region and service in the credential scope are whatever the client was
//! configured with: an edge box has no region of its own.

use http::HeaderMap;
use ring::{digest, hmac};

/// Why a request's signature was not accepted: the AWS error code
/// (`IncompleteSignatureException`, …) and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SignatureError {
    pub code: &'static str,
    pub message: String,
}

impl SignatureError {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// HTTP/2's authority pseudo-header, as a signed header's name.
const AUTHORITY: &str = ":authority";

/// The parts of a request the signature covers.
pub struct SignedParts<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    /// The request's authority, for HTTP/2 (which has no `Host` header).
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

/// A parsed `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    /// `YYYYMMDD`, `region`, `service`: the credential scope.
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: Vec<u8>,
}

fn incomplete(message: impl Into<String>) -> SignatureError {
    SignatureError::new("IncompleteSignatureException", message)
}

fn invalid_signature(message: impl Into<String>) -> SignatureError {
    SignatureError::new("InvalidSignatureException", message)
}

/// Reads the `Authorization` header; a request without one is
/// `MissingAuthenticationTokenException`.
pub fn parse_authorization(headers: &HeaderMap) -> Result<Authorization, SignatureError> {
    let Some(value) = headers.get(http::header::AUTHORIZATION) else {
        return Err(SignatureError::new(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let value = value
        .to_str()
        .map_err(|_| incomplete("the Authorization header is not ASCII"))?;
    let Some(rest) = value.strip_prefix(ALGORITHM) else {
        let algorithm = value.split_whitespace().next().unwrap_or("");
        return Err(incomplete(format!(
            "Unsupported AWS 'algorithm': '{algorithm}' (only {ALGORITHM} is)"
        )));
    };
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("Credential", v)) => credential = Some(v.trim()),
            Some(("SignedHeaders", v)) => signed_headers = Some(v.trim()),
            Some(("Signature", v)) => signature = Some(v.trim()),
            _ => {}
        }
    }
    let mut missing = String::new();
    for (name, part) in [
        ("Credential", credential),
        ("Signature", signature),
        ("SignedHeaders", signed_headers),
    ] {
        if part.is_none() {
            missing.push_str(&format!(
                "Authorization header requires '{name}' parameter. "
            ));
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) =
        (credential, signed_headers, signature)
    else {
        return Err(incomplete(format!("{missing}Authorization={value}")));
    };
    let scope: Vec<&str> = credential.split('/').collect();
    let [access_key, date, region, service, "aws4_request"] = scope[..] else {
        return Err(incomplete(format!(
            "Credential should be ACCESS_KEY/YYYYMMDD/REGION/SERVICE/aws4_request, not '{credential}'"
        )));
    };
    let signature = decode_hex(signature)
        .filter(|s| s.len() == 32)
        .ok_or_else(|| incomplete("Signature must be 64 hexadecimal digits"))?;
    Ok(Authorization {
        access_key: access_key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers: signed_headers
            .split(';')
            .map(|h| h.trim().to_ascii_lowercase())
            .collect(),
        signature,
    })
}

/// The request's `X-Amz-Date` as written and as epoch milliseconds.
pub fn request_time(headers: &HeaderMap) -> Result<(String, u64), SignatureError> {
    let value = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            incomplete(
                "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header.",
            )
        })?;
    let ms = parse_amz_date(value).ok_or_else(|| {
        incomplete(format!(
            "X-Amz-Date must be YYYYMMDD'T'HHMMSS'Z', not '{value}'"
        ))
    })?;
    Ok((value.to_owned(), ms))
}

/// Checks `authorization` against the request, the secret and the clock.
pub fn verify(
    parts: &SignedParts<'_>,
    authorization: &Authorization,
    secret: &str,
    now_ms: u64,
    clock_skew_ms_max: u64,
) -> Result<(), SignatureError> {
    let (amz_date, signed_ms) = request_time(parts.headers)?;
    if !amz_date.starts_with(&authorization.date) {
        return Err(invalid_signature(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            authorization.date,
            &amz_date[..amz_date.len().min(8)]
        )));
    }
    if signed_ms.abs_diff(now_ms) > clock_skew_ms_max {
        return Err(invalid_signature(format!(
            "Signature expired: {amz_date} is more than {} s away from the server's time {} \
             (signature_clock_skew_ms_max); check the client's clock",
            clock_skew_ms_max / 1000,
            format_amz_date(now_ms)
        )));
    }
    // HTTP/2 clients (the AWS SDK for JavaScript) sign the `:authority`
    // pseudo-header instead of `host`; AWS takes either.
    if !authorization
        .signed_headers
        .iter()
        .any(|h| h == "host" || h == AUTHORITY)
    {
        return Err(incomplete("SignedHeaders must include 'host'"));
    }
    let expected = signature(parts, authorization, &amz_date, secret);
    let key = hmac::Key::new(hmac::HMAC_SHA256, &expected);
    // Compare in constant time: sign the received signature with a key of
    // the expected one and verify, which ring does without early exit.
    let tag = hmac::sign(&key, &authorization.signature);
    hmac::verify(&key, &expected, tag.as_ref()).map_err(|_| {
        invalid_signature(
            "The request signature we calculated does not match the signature you provided. \
             Check your AWS Secret Access Key and signing method. Consult the service \
             documentation for details.",
        )
    })
}

/// The signature the request should carry (also what a client computes).
pub fn signature(
    parts: &SignedParts<'_>,
    authorization: &Authorization,
    amz_date: &str,
    secret: &str,
) -> Vec<u8> {
    let canonical = canonical_request(parts, &authorization.signed_headers);
    let scope = format!(
        "{}/{}/{}/aws4_request",
        authorization.date, authorization.region, authorization.service
    );
    let string_to_sign = format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        hex(digest::digest(&digest::SHA256, canonical.as_bytes()).as_ref())
    );
    let mut key = hmac_sha256(
        format!("AWS4{secret}").as_bytes(),
        authorization.date.as_bytes(),
    );
    for part in [
        authorization.region.as_bytes(),
        authorization.service.as_bytes(),
        b"aws4_request",
    ] {
        key = hmac_sha256(&key, part);
    }
    hmac_sha256(&key, string_to_sign.as_bytes())
}

/// The `Authorization` header value for a request (the client's side:
/// for Weir's benchmark and tests). `parts.headers` must already hold
/// every header in `signed_headers`, `x-amz-date` among them.
pub fn authorization_header(
    parts: &SignedParts<'_>,
    signed_headers: &[&str],
    access_key: &str,
    secret: &str,
    region: &str,
) -> Result<String, SignatureError> {
    let (amz_date, _) = request_time(parts.headers)?;
    let authorization = Authorization {
        access_key: access_key.to_owned(),
        date: amz_date[..8].to_owned(),
        region: region.to_owned(),
        service: "kinesis".to_owned(),
        signed_headers: signed_headers.iter().map(|h| (*h).to_owned()).collect(),
        signature: Vec::new(),
    };
    let signature = signature(parts, &authorization, &amz_date, secret);
    Ok(format!(
        "{ALGORITHM} Credential={access_key}/{}/{region}/kinesis/aws4_request, SignedHeaders={}, Signature={}",
        authorization.date,
        signed_headers.join(";"),
        hex(&signature)
    ))
}

fn canonical_request(parts: &SignedParts<'_>, signed_headers: &[String]) -> String {
    let mut canonical_headers = String::new();
    for name in signed_headers {
        // A pseudo-header is no header at all: `:authority` is the request's
        // authority (HTTP/2) or, over HTTP/1.1, its `Host`.
        let lookup = if name == AUTHORITY { "host" } else { name };
        let mut values: Vec<String> = parts
            .headers
            .get_all(lookup)
            .iter()
            .map(|v| collapse_spaces(&String::from_utf8_lossy(v.as_bytes())))
            .collect();
        if values.is_empty() && lookup == "host" {
            values.extend(parts.authority.map(str::to_owned));
        }
        canonical_headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        parts.method,
        if parts.path.is_empty() {
            "/"
        } else {
            parts.path
        },
        canonical_query(parts.query),
        canonical_headers,
        signed_headers.join(";"),
        hex(digest::digest(&digest::SHA256, parts.body).as_ref())
    )
}

fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (
                uri_encode(&percent_decode(key)),
                uri_encode(&percent_decode(value)),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn collapse_spaces(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn uri_encode(value: &[u8]) -> String {
    let mut out = String::new();
    for &byte in value {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decode(value: &str) -> Vec<u8> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match decoded {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
                i += 1;
            }
        }
    }
    out
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), message)
        .as_ref()
        .to_vec()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `YYYYMMDDTHHMMSSZ` as epoch milliseconds.
pub fn parse_amz_date(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| -> Option<i64> { text.get(range)?.parse().ok() };
    let (year, month, day) = (number(0..4)?, number(4..6)?, number(6..8)?);
    let (hour, minute, second) = (number(9..11)?, number(11..13)?, number(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second;
    u64::try_from(seconds).ok().map(|s| s * 1000)
}

/// Epoch milliseconds as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(ms: u64) -> String {
    let seconds = (ms / 1000) as i64;
    let (days, rest) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

// Howard Hinnant's civil-date algorithms (proleptic Gregorian calendar).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's published example (the "get-vanilla" case of the SigV4 test
    /// suite): secret, scope and expected signature are AWS's.
    #[test]
    fn the_aws_test_vector_verifies() {
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let mut headers = HeaderMap::new();
        headers.insert("host", "example.amazonaws.com".parse().expect("h"));
        headers.insert("x-amz-date", "20150830T123600Z".parse().expect("h"));
        headers.insert(
            http::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
                .parse()
                .expect("h"),
        );
        let parts = SignedParts {
            method: "GET",
            path: "/",
            query: "",
            headers: &headers,
            authority: None,
            body: b"",
        };
        let authorization = parse_authorization(&headers).expect("parses");
        assert_eq!(authorization.access_key, "AKIDEXAMPLE");
        let now = parse_amz_date("20150830T123600Z").expect("date");
        verify(&parts, &authorization, secret, now, 300_000).expect("AWS's own example verifies");

        let error = verify(&parts, &authorization, "wrong", now, 300_000).expect_err("wrong key");
        assert_eq!(error.code, "InvalidSignatureException");
        let late = now + 301_000;
        let error = verify(&parts, &authorization, secret, late, 300_000).expect_err("skew");
        assert!(
            error.message.contains("Signature expired"),
            "{}",
            error.message
        );
        let mut tampered = headers.clone();
        tampered.insert("host", "evil.example.com".parse().expect("h"));
        let parts = SignedParts {
            headers: &tampered,
            ..parts
        };
        let error = verify(&parts, &authorization, secret, now, 300_000).expect_err("tampered");
        assert_eq!(error.code, "InvalidSignatureException");
    }

    /// An HTTP/2 request as the AWS SDK for JavaScript v3 signs it:
    /// `:authority` in SignedHeaders, no `host` header. The signature is
    /// the one that SDK's signer (@smithy/signature-v4) computed for this
    /// request.
    #[test]
    fn a_signed_authority_pseudo_header_verifies_as_the_javascript_sdk_signs_it() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "Kinesis_20131202.ListStreams"),
            ("x-amz-date", "20261130T050000Z"),
            (
                "x-amz-content-sha256",
                "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            ),
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=admin/20261130/us-east-1/kinesis/aws4_request, \
                 SignedHeaders=:authority;content-type;x-amz-content-sha256;x-amz-date;x-amz-target, \
                 Signature=d5590a593044244960ef06c19c5aaf89d490e547d2e4889ed5b1aca800b7caf7",
            ),
        ] {
            headers.insert(name, value.parse().expect("header"));
        }
        let parts = SignedParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            authority: Some("127.0.0.1:4567"),
            body: b"{}",
        };
        let authorization = parse_authorization(&headers).expect("parses");
        let now = parse_amz_date("20261130T050000Z").expect("date");
        verify(&parts, &authorization, "secret", now, 300_000).expect("the SDK's signature");

        // Over HTTP/1.1 the same authority arrives as `Host`.
        let mut with_host = headers.clone();
        with_host.insert("host", "127.0.0.1:4567".parse().expect("h"));
        let parts = SignedParts {
            headers: &with_host,
            authority: None,
            ..parts
        };
        verify(&parts, &authorization, "secret", now, 300_000).expect("from Host");
        let other = SignedParts {
            authority: Some("127.0.0.1:9999"),
            headers: &headers,
            ..parts
        };
        let error = verify(&other, &authorization, "secret", now, 300_000).expect_err("moved");
        assert_eq!(error.code, "InvalidSignatureException");
    }

    #[test]
    fn what_the_client_side_signs_the_server_side_verifies() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:4567".parse().expect("h"));
        headers.insert("x-amz-date", "20261130T050000Z".parse().expect("h"));
        headers.insert(
            "x-amz-target",
            "Kinesis_20131202.ListStreams".parse().expect("h"),
        );
        let parts = SignedParts {
            method: "POST",
            path: "/",
            query: "",
            headers: &headers,
            authority: None,
            body: b"{}",
        };
        let header = authorization_header(
            &parts,
            &["host", "x-amz-date", "x-amz-target"],
            "admin",
            "secret",
            "eu-west-1",
        )
        .expect("signs");
        let mut signed = headers.clone();
        signed.insert(http::header::AUTHORIZATION, header.parse().expect("h"));
        let parts = SignedParts {
            headers: &signed,
            ..parts
        };
        let authorization = parse_authorization(&signed).expect("parses");
        assert_eq!(authorization.region, "eu-west-1");
        let now = parse_amz_date("20261130T050000Z").expect("date");
        verify(&parts, &authorization, "secret", now, 300_000).expect("verifies");
        let body_changed = SignedParts {
            body: b"{\"Limit\":1}",
            ..parts
        };
        let error = verify(&body_changed, &authorization, "secret", now, 300_000)
            .expect_err("the body is signed");
        assert_eq!(error.code, "InvalidSignatureException");
    }

    #[test]
    fn missing_and_malformed_headers_get_their_own_codes() {
        let headers = HeaderMap::new();
        assert_eq!(
            parse_authorization(&headers).expect_err("missing").code,
            "MissingAuthenticationTokenException"
        );
        for bad in [
            "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request",
            "AWS4-HMAC-SHA256 Credential=a/b, SignedHeaders=host, Signature=00",
            "Basic dXNlcjpwYXNz",
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(http::header::AUTHORIZATION, bad.parse().expect("h"));
            let error = parse_authorization(&headers).expect_err(bad);
            assert_eq!(error.code, "IncompleteSignatureException", "{bad}");
        }
    }

    #[test]
    fn dates_round_trip() {
        for text in [
            "19700101T000000Z",
            "20150830T123600Z",
            "20241231T235959Z",
            "20000229T120000Z",
        ] {
            let ms = parse_amz_date(text).expect(text);
            assert_eq!(format_amz_date(ms), text);
        }
        assert_eq!(parse_amz_date("20150830T123600Z"), Some(1_440_938_160_000));
        assert!(parse_amz_date("2015-08-30").is_none());
        assert!(parse_amz_date("20151330T123600Z").is_none());
    }
}
