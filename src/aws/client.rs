//! AWS SDK configuration: the standard credential and region chain, an optional endpoint
//! (`--endpoint-url` or `AWS_ENDPOINT_URL`), SDK retries off (one retry layer: `retry.rs`) and
//! a timeout on every call.

use std::time::Duration;

use anyhow::Context;

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
    loader = loader.http_client(https_client(std::env::var_os("AWS_CA_BUNDLE").as_deref())?);
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

/// The HTTPS client for every AWS call: rustls with ring, trusting the system's CA store
/// (`SSL_CERT_FILE`/`SSL_CERT_DIR` override it) plus the PEM bundle in `AWS_CA_BUNDLE`, as the
/// AWS CLI does (a TLS-inspecting proxy, a private endpoint).
fn https_client(ca_bundle: Option<&std::ffi::OsStr>) -> anyhow::Result<aws_sdk_ebs::config::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    let mut builder = aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::Ring));
    if let Some(path) = ca_bundle.filter(|p| !p.is_empty()) {
        let path = std::path::Path::new(path);
        let pem = std::fs::read(path).with_context(|| format!("AWS_CA_BUNDLE: cannot read {}", path.display()))?;
        if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
            anyhow::bail!("AWS_CA_BUNDLE: {} holds no PEM certificate", path.display());
        }
        let store = tls::TrustStore::empty().with_native_roots(true).with_pem_certificate(pem);
        let ctx = tls::TlsContext::builder().with_trust_store(store).build().context("AWS_CA_BUNDLE: unusable certificates")?;
        builder = builder.tls_context(ctx);
    }
    Ok(builder.build_https())
}

/// An EC2 client for `region` (copies go to other regions).
pub fn ec2_in(cfg: &aws_config::SdkConfig, region: &str) -> aws_sdk_ec2::Client {
    let conf = aws_sdk_ec2::config::Builder::from(cfg).region(aws_config::Region::new(region.to_string())).build();
    aws_sdk_ec2::Client::from_conf(conf)
}

/// An SSM client for `region`.
pub fn ssm_in(cfg: &aws_config::SdkConfig, region: &str) -> aws_sdk_ssm::Client {
    let conf = aws_sdk_ssm::config::Builder::from(cfg).region(aws_config::Region::new(region.to_string())).build();
    aws_sdk_ssm::Client::from_conf(conf)
}

/// An EC2 Auto Scaling client for `region`.
pub fn autoscaling_in(cfg: &aws_config::SdkConfig, region: &str) -> aws_sdk_autoscaling::Client {
    let conf = aws_sdk_autoscaling::config::Builder::from(cfg).region(aws_config::Region::new(region.to_string())).build();
    aws_sdk_autoscaling::Client::from_conf(conf)
}
