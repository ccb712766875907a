//! SDK clients, built one way: one `SdkConfig` from the standard chain (profile, environment,
//! SSO cache, container/instance role), optional static keys and assume-role, the endpoint
//! override, the SDK's standard retry mode and hard timeouts; per-region clients derived from it.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;

use super::error::AwsError;
use crate::core::config::Settings;

/// How to reach AWS: the `Settings` keys that concern the SDK.
#[derive(Debug, Clone, Default)]
pub struct AwsOptions {
    /// Shared-config profile.
    pub profile: Option<String>,
    /// Home region (STS, default clients).
    pub region: Option<String>,
    /// Endpoint override for every service.
    pub endpoint_url: Option<String>,
    /// Static keys.
    pub access_key: Option<String>,
    /// Static secret.
    pub secret_key: Option<String>,
    /// Session token.
    pub token: Option<String>,
    /// Role to assume first (`role_arn`, `session_name`, `external_id`).
    pub assume_role: Option<(String, Option<String>, Option<String>)>,
    /// Total attempts per call.
    pub max_attempts: u32,
}

impl AwsOptions {
    /// The SDK-related part of a configuration.
    pub fn from_settings(s: &Settings) -> AwsOptions {
        AwsOptions {
            profile: s.profile.clone(),
            region: s.region.clone(),
            endpoint_url: s.endpoint_url.clone(),
            access_key: s.access_key.clone(),
            secret_key: s.secret_key.clone(),
            token: s.token.clone(),
            assume_role: s.assume_role.get("role_arn").map(|arn| {
                (
                    arn.clone(),
                    s.assume_role.get("session_name").cloned(),
                    s.assume_role.get("external_id").cloned(),
                )
            }),
            max_attempts: crate::core::config::max_attempts(s.max_retries),
        }
    }
}

/// A configured connection to AWS for one identity.
#[derive(Debug, Clone)]
pub struct Aws {
    base: SdkConfig,
    /// The region STS and global calls use.
    pub home_region: String,
    /// Who this identity is, for the call log (`producer` or the assumed account).
    who: String,
    /// The identity's account, asked of STS once: an identity's account never changes, and
    /// clones of this identity (one per account in `copy`, one per run elsewhere) share it.
    account: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

/// Appends one JSON line per AWS call (service, operation, region, identity, outcome) to the
/// file named by `AMIKEY_CALL_LOG`. Tests use it to count calls (a re-run must make no write)
/// and to keep the README's IAM policy equal to the calls actually made.
#[derive(Debug, Clone)]
struct CallLog {
    path: std::path::PathBuf,
    region: String,
    who: String,
}

impl aws_smithy_runtime_api::client::interceptors::Intercept for CallLog {
    fn name(&self) -> &'static str {
        "amikey-call-log"
    }

    fn read_after_execution(
        &self,
        context: &aws_smithy_runtime_api::client::interceptors::context::FinalizerInterceptorContextRef<'_>,
        _rc: &aws_smithy_runtime_api::client::runtime_components::RuntimeComponents,
        cfg: &mut aws_smithy_types::config_bag::ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        use std::io::Write as _;
        let Some(meta) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>() else {
            return Ok(());
        };
        let ok = matches!(context.output_or_error(), Some(Ok(_)));
        let line = serde_json::json!({
            "service": meta.service(),
            "operation": meta.name(),
            "region": self.region,
            "who": self.who,
            "ok": ok,
        });
        if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(&self.path) {
            let _ = writeln!(f, "{line}");
        }
        Ok(())
    }
}

fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
    aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https()
}

impl Aws {
    /// Loads the configuration. `fallback_region` is used when neither the options nor the SDK
    /// chain name a region (the first AMI region, typically).
    pub async fn connect(opts: &AwsOptions, fallback_region: &str) -> Aws {
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(30))
            .operation_attempt_timeout(Duration::from_secs(30))
            .operation_timeout(Duration::from_secs(180))
            .build();
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .http_client(http_client())
            .retry_config(RetryConfig::standard().with_max_attempts(opts.max_attempts.max(1)))
            .timeout_config(timeouts);
        if let Some(p) = &opts.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &opts.endpoint_url {
            loader = loader.endpoint_url(e);
        }
        if let (Some(ak), Some(sk)) = (&opts.access_key, &opts.secret_key) {
            loader = loader.credentials_provider(Credentials::new(
                ak,
                sk,
                opts.token.clone(),
                None,
                "amikey-config",
            ));
        }
        let mut base = loader.load().await;
        if base.region().is_none() {
            base = base.into_builder().region(Region::new(fallback_region.to_string())).build();
        }
        let home_region = base.region().map(|r| r.to_string()).unwrap_or_else(|| fallback_region.to_string());
        let aws = Aws { base, home_region, who: "producer".into(), account: Default::default() };
        match &opts.assume_role {
            Some((arn, session, external)) => aws.assume(arn, session.as_deref(), external.as_deref()).await,
            None => aws,
        }
    }

    /// A connection for the identity of `role_arn`, assumed from this one (credentials are
    /// fetched on first use and refreshed by the SDK).
    pub async fn assume(&self, role_arn: &str, session_name: Option<&str>, external_id: Option<&str>) -> Aws {
        let mut b = AssumeRoleProvider::builder(role_arn)
            .session_name(session_name.unwrap_or("amikey"))
            .region(Region::new(self.home_region.clone()))
            .configure(&self.base);
        if let Some(e) = external_id {
            b = b.external_id(e);
        }
        let provider = b.build().await;
        let base = self
            .base
            .clone()
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider))
            .build();
        let who = crate::core::ids::arn_account(role_arn).unwrap_or(role_arn).to_string();
        Aws { base, home_region: self.home_region.clone(), who, account: Default::default() }
    }

    fn call_log(&self, region: &str) -> Option<CallLog> {
        let path = std::env::var_os("AMIKEY_CALL_LOG")?;
        Some(CallLog { path: path.into(), region: region.to_string(), who: self.who.clone() })
    }

    /// EC2 in `region`.
    pub fn ec2(&self, region: &str) -> aws_sdk_ec2::Client {
        let mut b = aws_sdk_ec2::config::Builder::from(&self.base).region(Region::new(region.to_string()));
        if let Some(l) = self.call_log(region) {
            b = b.interceptor(l);
        }
        aws_sdk_ec2::Client::from_conf(b.build())
    }

    /// KMS in `region`.
    pub fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        let mut b = aws_sdk_kms::config::Builder::from(&self.base).region(Region::new(region.to_string()));
        if let Some(l) = self.call_log(region) {
            b = b.interceptor(l);
        }
        aws_sdk_kms::Client::from_conf(b.build())
    }

    /// SSM in `region`.
    pub fn ssm(&self, region: &str) -> aws_sdk_ssm::Client {
        let mut b = aws_sdk_ssm::config::Builder::from(&self.base).region(Region::new(region.to_string()));
        if let Some(l) = self.call_log(region) {
            b = b.interceptor(l);
        }
        aws_sdk_ssm::Client::from_conf(b.build())
    }

    /// The account id of this identity (STS GetCallerIdentity, asked once per identity).
    pub async fn account_id(&self) -> Result<String, AwsError> {
        self.account.get_or_try_init(|| self.caller_account()).await.cloned()
    }

    /// STS GetCallerIdentity's account.
    async fn caller_account(&self) -> Result<String, AwsError> {
        let mut b =
            aws_sdk_sts::config::Builder::from(&self.base).region(Region::new(self.home_region.clone()));
        if let Some(l) = self.call_log(&self.home_region) {
            b = b.interceptor(l);
        }
        let sts = aws_sdk_sts::Client::from_conf(b.build());
        let out = sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| AwsError::from_sdk("GetCallerIdentity", &self.home_region, e))?;
        out.account().map(str::to_string).ok_or_else(|| {
            AwsError::local("GetCallerIdentity", &self.home_region, "STS returned no account id")
        })
    }
}
