//! `bootstrap`: the AWS Lambda function (runtime `provided.al2023`), a thin shell over
//! [`amikey::lambda::handle`]. The configuration is read once at init; a broken one does not
//! stop the runtime, so a CloudFormation request is still answered (FAILED, with the reason).

// The handler's future (the whole grant run, awaited inside the runtime's) is deeper than the
// default limit lets rustc compute its layout.
#![recursion_limit = "256"]

use std::time::{Duration, SystemTime};

use lambda_runtime::{Diagnostic, Error, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    let config = amikey::lambda::FunctionConfig::from_env(|k| std::env::var(k).ok());
    if let Err(e) = &config {
        amikey::lambda::log_line("error", serde_json::json!({ "error": "Configuration", "message": e }));
    }
    // Lives as long as the process; the runtime's handler borrows it on every invocation.
    let config: &'static _ = Box::leak(Box::new(config));
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = SystemTime::UNIX_EPOCH + Duration::from_millis(event.context.deadline);
        // The error's kind is the invocation's errorType; its message says what to do.
        amikey::lambda::handle(config, event.payload, deadline)
            .await
            .map_err(|e| Diagnostic { error_type: e.kind.to_string(), error_message: e.message })
    }))
    .await
}
