//! The answer to CloudFormation: one HTTPS PUT of the response document to the request's
//! pre-signed `ResponseURL` (an S3 URL; plain `http://` in tests).
//!
//! Which client: this is not an AWS API call (no signing, no retries policy, no endpoint
//! resolution), so no SDK client fits; but the SDK's own HTTP stack is already in the binary.
//! `aws_smithy_http_client::Connector` is hyper 1 + hyper-util + rustls with the ring provider,
//! exactly the one the SDK clients use (`crate::aws::clients`): a single `call` sends a request
//! and yields the response. Using it adds no crate and no second TLS stack (reqwest or ureq would
//! add both, and their own root-store code), and keeps TLS choices in one place. The timeout is
//! ours, from the invocation's deadline, so the PUT can never outlive the invocation.

use std::time::Duration;

use aws_smithy_runtime_api::client::http::HttpConnector;
use aws_smithy_types::body::SdkBody;

/// PUTs `body` to `url` within `timeout`. `Ok` only for a 2xx answer.
pub async fn put(url: &str, body: Vec<u8>, timeout: Duration) -> Result<(), String> {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    let scheme_ok = url.starts_with("https://") || url.starts_with("http://");
    if !scheme_ok {
        return Err(format!("ResponseURL {url:?} is not an http(s) URL"));
    }
    let connector =
        aws_smithy_http_client::Connector::builder().tls_provider(Provider::Rustls(CryptoMode::Ring)).build();
    let len = body.len();
    let mut req = aws_smithy_runtime_api::http::Request::new(SdkBody::from(body));
    req.set_method("PUT").map_err(|e| format!("PUT: {e}"))?;
    req.set_uri(url).map_err(|e| format!("ResponseURL {url:?}: {e}"))?;
    // The URL is pre-signed for an empty Content-Type (as AWS's cfn-response sends it): any
    // other value breaks the signature.
    req.headers_mut().insert("content-type", "");
    req.headers_mut().insert("content-length", len.to_string());
    match tokio::time::timeout(timeout, connector.call(req)).await {
        Err(_) => Err(format!("no answer from the ResponseURL within {} ms", timeout.as_millis())),
        Ok(Err(e)) => Err(format!("PUT to the ResponseURL failed: {e:?}")),
        Ok(Ok(resp)) if resp.status().is_success() => Ok(()),
        Ok(Ok(resp)) => {
            let detail =
                resp.body().bytes().map(|b| String::from_utf8_lossy(b).chars().take(300).collect::<String>());
            Err(format!(
                "the ResponseURL answered HTTP {}{} (an expired or altered pre-signed URL?)",
                resp.status().as_u16(),
                detail.map(|d| format!(": {d}")).unwrap_or_default()
            ))
        }
    }
}
