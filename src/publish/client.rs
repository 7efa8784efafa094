//! AWS SDK configuration: the standard credential and region chain, an optional endpoint
//! (`--endpoint-url` or `AWS_ENDPOINT_URL`), SDK retries off (one retry layer: `retry.rs`) and
//! a timeout on every call.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;

/// Per-attempt limit for one call (a 512 KiB PUT included). A hung request fails after this and
/// is retried, instead of blocking a worker forever.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// TCP/TLS connect limit.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the shared SDK config. `region`: explicit, else the chain's.
pub async fn load(region: Option<&str>, endpoint_url: Option<&str>) -> anyhow::Result<aws_config::SdkConfig> {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).retry_config(RetryConfig::standard().with_max_attempts(1)).timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .operation_attempt_timeout(CALL_TIMEOUT)
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        );
    // The HTTPS client for every AWS call: rustls with ring, trusting the system's CA store.
    let https = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring))
        .build_https();
    loader = loader.http_client(https);
    if let Some(r) = region {
        loader = loader.region(aws_config::Region::new(r.to_string()));
    }
    if let Some(u) = endpoint_url {
        loader = loader.endpoint_url(u);
    }
    let cfg = loader.load().await;
    if cfg.region().is_none() {
        anyhow::bail!("no AWS region: give --region, set [aws] region in the recipe, or set AWS_REGION");
    }
    Ok(cfg)
}

/// An EC2 client for `region` (copies go to other regions).
pub fn ec2_in(cfg: &aws_config::SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::from(cfg).region(aws_config::Region::new(region.to_string())).build();
    aws_sdk_ec2::Client::from_conf(conf)
}
