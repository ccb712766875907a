//! One error type for every AWS call: which operation, in which region (and account), the
//! service's error code, and a message that says what to do.

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
    pub fn from_sdk<E, R>(operation: &'static str, region: &str, err: SdkError<E, R>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        let code = err.code().map(str::to_string);
        let message = match (&err, err.message()) {
            (SdkError::ServiceError(_), Some(m)) => m.to_string(),
            _ => format!("{}", aws_smithy_types::error::display::DisplayErrorContext(&err)),
        };
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
            None => match &err {
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Some(
                    "No answer from the endpoint: check the network, the region and endpoint_url / AWS_ENDPOINT_URL".to_string(),
                ),
                SdkError::ResponseError(_) => Some("The endpoint answered with something that is not an AWS response".to_string()),
                _ => None,
            },
            _ => None,
        };
        AwsError { operation, region: region.to_string(), account: None, code, message, hint }
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
