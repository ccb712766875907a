//! One error type for every AWS call: which operation, in which region (and account), the
//! service's error code, and a message that says what to do.

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// A failed AWS call.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{operation} in {region}{}: {message}{}", account.as_ref().map(|a| format!(" (account {a})")).unwrap_or_default(), hint.as_ref().map(|h| format!(". {h}")).unwrap_or_default())]
pub struct AwsError {
    /// The API operation (`DescribeImages`).
    pub operation: &'static str,
    /// Region of the client.
    pub region: String,
    /// Account, when the call was made in another account by assumed role.
    pub account: Option<String>,
    /// Service error code (`UnauthorizedOperation`), when the service answered.
    pub code: Option<String>,
    /// The error text.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl AwsError {
    /// Converts an SDK error, keeping its code and adding a hint for the common causes.
    pub fn from_sdk<E>(operation: &'static str, region: &str, err: SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_string);
        let message = match (&err, err.message(), &code) {
            (SdkError::ServiceError(_), Some(m), _) => m.to_string(),
            (SdkError::ServiceError(ctx), None, Some(c)) => {
                format!("{c} (HTTP {})", ctx.raw().status().as_u16())
            }
            (SdkError::ServiceError(ctx), None, None) => {
                let body = ctx
                    .raw()
                    .body()
                    .bytes()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let body: String =
                    body.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect();
                format!(
                    "HTTP {} with a body that is not an AWS error response: {body:?}",
                    ctx.raw().status().as_u16()
                )
            }
            (SdkError::ResponseError(ctx), ..) => {
                format!(
                    "unreadable response (HTTP {}): {}",
                    ctx.raw().status().as_u16(),
                    aws_smithy_types::error::display::DisplayErrorContext(&err)
                )
            }
            _ => {
                // DisplayErrorContext ends in a Debug dump of the whole chain: keep the prose.
                let full = format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&err));
                full.split(" (").next().unwrap_or(&full).to_string()
            }
        };
        let no_credentials = message.contains("loading credentials") || message.contains("no credentials");
        let hint = match code.as_deref() {
            Some("UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException") => Some(format!(
                "This identity is not allowed to call {operation}: add it to the identity's IAM policy (README, \"IAM permissions\")"
            )),
            Some("RequestLimitExceeded" | "ThrottlingException" | "Throttling") => {
                Some("AWS kept throttling after every retry: raise max_retries or run again later".to_string())
            }
            Some("AuthFailure" | "UnrecognizedClientException" | "InvalidClientTokenId" | "ExpiredToken" | "ExpiredTokenException") => {
                Some("Check the AWS credentials (profile, environment, assume_role)".to_string())
            }
            None if no_credentials => Some(
                "No usable AWS credentials: set AWS_PROFILE (or --profile), AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, \
                 or run where an instance or container role is available"
                    .to_string(),
            ),
            None => match &err {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Some(
                    "No answer from the endpoint: check the network, the region and endpoint_url / AWS_ENDPOINT_URL".to_string(),
                ),
                SdkError::ResponseError(_) | SdkError::ServiceError(_) => {
                    Some("The endpoint answered with something that is not an AWS response: check endpoint_url / AWS_ENDPOINT_URL".to_string())
                }
                _ => None,
            },
            _ => None,
        };
        AwsError { operation, region: region.to_string(), account: None, code, message, hint }
    }

    /// An error found on our side of a call: an answer without a field it must have, a value the
    /// SDK would not build, a response we cannot use. No service code, no hint.
    pub fn local(operation: &'static str, region: &str, message: impl Into<String>) -> AwsError {
        AwsError {
            operation,
            region: region.to_string(),
            account: None,
            code: None,
            message: message.into(),
            hint: None,
        }
    }

    /// The same error with this service code (for an answer that means it).
    pub fn with_code(mut self, code: &str) -> AwsError {
        self.code = Some(code.to_string());
        self
    }

    /// The same error with what to do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> AwsError {
        self.hint = Some(hint.into());
        self
    }

    /// The same error, attributed to an account.
    pub fn in_account(mut self, account: &str) -> AwsError {
        self.account = Some(account.to_string());
        self
    }

    /// True when the service said the thing does not exist (`*.NotFound`, `NotFoundException`,
    /// `ParameterNotFound`).
    pub fn is_not_found(&self) -> bool {
        self.code
            .as_deref()
            .is_some_and(|c| c.ends_with("NotFound") || c == "NotFoundException" || c == "ParameterNotFound")
    }

    /// True for an access-denied answer.
    pub fn is_access_denied(&self) -> bool {
        matches!(
            self.code.as_deref(),
            Some("AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation")
        )
    }
}
