//! AWS test harness: a moto server on 127.0.0.1 (one per test, stopped by PID on drop), a fault
//! proxy between imgforge and moto, and a boto3 reader for what moto holds. Nothing here
//! touches any address but 127.0.0.1.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;

use sha2::Digest;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running moto server; killed (by its PID) on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
    /// Serves HTTPS (see [`start_moto_tls`]).
    tls: bool,
}

impl Moto {
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.tls { "https" } else { "http" }, self.port)
    }
}

/// The CA of each HTTPS endpoint: [`aws_env`] hands it to imgforge and boto3 as AWS_CA_BUNDLE.
static CAS: Mutex<std::collections::BTreeMap<String, std::path::PathBuf>> = Mutex::new(std::collections::BTreeMap::new());

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether moto and boto3 are importable; prints why not.
pub fn have_moto(test: &str) -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import moto.server, boto3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok || crate::util::skip(test, "needs python3 with moto[server] and boto3 (scripts/setup --tests)")
}

/// Starts moto on a free port of 127.0.0.1, logging into `log`.
pub fn start_moto(log: &Path) -> Moto {
    spawn_moto(log, &[])
}

/// Starts moto speaking HTTPS on 127.0.0.1 with a certificate for that address, signed by a
/// throwaway CA made here with openssl. Returns the server and the CA's PEM.
pub fn start_moto_tls(dir: &Path) -> (Moto, std::path::PathBuf) {
    let sh = |args: &[&str]| {
        let o = Command::new("openssl").args(args).current_dir(dir).output().unwrap();
        assert!(o.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    sh(&[&["req", "-x509"][..], &ec, &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=imgforge test CA"]].concat());
    sh(&[&["req"][..], &ec, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(dir.join("server.ext"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
        .unwrap();
    sh(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let mut moto = spawn_moto(&dir.join("moto.log"), &["-c", cert.to_str().unwrap(), "-k", key.to_str().unwrap()]);
    moto.tls = true;
    let ca = dir.join("ca.pem");
    CAS.lock().unwrap().insert(moto.url(), ca.clone());
    (moto, ca)
}

fn spawn_moto(log: &Path, extra: &[&str]) -> Moto {
    for _ in 0..3 {
        let port = free_port();
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new("python3")
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .env("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let moto = Moto { child, port, tls: false };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return moto;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    panic!("moto did not start; see {}", log.display());
}

/// Environment for imgforge and boto3 against an endpoint: dummy credentials, no IMDS.
pub fn aws_env(cmd: &mut Command, endpoint: &str, region: &str) {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing-secret-not-real")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_PROFILE")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", region)
        .env("AWS_DEFAULT_REGION", region);
    match CAS.lock().unwrap().get(endpoint) {
        Some(ca) => cmd.env("AWS_CA_BUNDLE", ca),
        None => cmd.env_remove("AWS_CA_BUNDLE"),
    };
}

/// What the proxy does to PutSnapshotBlock requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Pass everything.
    None,
    /// ~20 %: 400 RequestThrottledException, 503, 500 or a dropped connection, in turn.
    Flaky,
    /// 403 AccessDeniedException.
    Deny,
    /// Each PUT delayed by this many ms.
    Slow(u64),
    /// The first N PUTs answer "snapshot does not exist" (a new snapshot not visible yet).
    NotYet(u64),
    /// An endpoint that drops RegisterImage's TagSpecifications, and whose CreateTags on an AMI
    /// never answers (a publish killed before its AMI was tagged).
    Untagged,
}

/// One request seen by the proxy.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub body: String,
}

/// A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of moto. It also answers, as AWS
/// documents them, the EC2 calls moto lacks: DescribeImageAttribute `lastLaunchedTime` (from
/// `last_launched`, AMI id → RFC 3339 time; none: an empty value, as for a never-launched
/// AMI), and DisableImage / EnableImageDeprecation (`true`, the AMI noted in `disabled` /
/// `deprecated`).
pub struct Proxy {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub faults: Arc<AtomicU64>,
    pub last_launched: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
    pub disabled: Arc<Mutex<Vec<String>>>,
    pub deprecated: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Query-API bodies (EC2) whose Action is `action`.
    pub fn actions(&self, action: &str) -> Vec<String> {
        let needle = format!("Action={action}&");
        self.seen.lock().unwrap().iter().filter(|s| s.body.contains(&needle)).map(|s| s.body.clone()).collect()
    }

    /// PutSnapshotBlock requests forwarded or failed.
    pub fn puts(&self) -> usize {
        self.seen.lock().unwrap().iter().filter(|s| s.method == "PUT" && s.path.contains("/blocks/")).count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

pub fn start_proxy(upstream: u16, fault: Fault) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let faults = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let counter = Arc::new(AtomicU64::new(0));
    let last_launched = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let disabled = Arc::new(Mutex::new(Vec::new()));
    let deprecated = Arc::new(Mutex::new(Vec::new()));
    let (s2, f2, st2) = (seen.clone(), faults.clone(), stop.clone());
    let extras = Extras { last_launched: last_launched.clone(), disabled: disabled.clone(), deprecated: deprecated.clone() };
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            if st2.load(Ordering::Relaxed) {
                return;
            }
            let Ok(conn) = conn else { continue };
            let (seen, faults, counter, extras) = (s2.clone(), f2.clone(), counter.clone(), extras.clone());
            std::thread::spawn(move || {
                let _ = serve(conn, upstream, fault, &seen, &faults, &counter, &extras);
            });
        }
    });
    Proxy { port, seen, faults, last_launched, disabled, deprecated, stop }
}

/// What the proxy answers itself.
#[derive(Clone)]
struct Extras {
    last_launched: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
    disabled: Arc<Mutex<Vec<String>>>,
    deprecated: Arc<Mutex<Vec<String>>>,
}

/// A query-API form value.
fn form_value(body: &str, key: &str) -> Option<String> {
    body.split('&').find_map(|kv| kv.strip_prefix(&format!("{key}="))).map(|v| v.replace("%2F", "/").replace("%3A", ":"))
}

/// An EC2 XML answer.
fn ec2_xml(action: &str, inner: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<{action}Response xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><requestId>imgforge-test-proxy</requestId>{inner}</{action}Response>"
    );
    format!("HTTP/1.1 200 OK\r\nContent-Type: text/xml;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

/// The EC2 answers moto lacks; `None`: forward.
fn answer(body: &str, extras: &Extras) -> Option<Vec<u8>> {
    let action = form_value(body, "Action")?;
    let image = form_value(body, "ImageId").unwrap_or_default();
    match action.as_str() {
        "DescribeImageAttribute" if form_value(body, "Attribute").as_deref() == Some("lastLaunchedTime") => {
            let value = extras.last_launched.lock().unwrap().get(&image).cloned();
            let inner = match value {
                Some(t) => format!("<imageId>{image}</imageId><lastLaunchedTime><value>{t}</value></lastLaunchedTime>"),
                None => format!("<imageId>{image}</imageId><lastLaunchedTime/>"),
            };
            Some(ec2_xml(&action, &inner))
        }
        "DisableImage" => {
            extras.disabled.lock().unwrap().push(image);
            Some(ec2_xml(&action, "<return>true</return>"))
        }
        "EnableImageDeprecation" => {
            extras.deprecated.lock().unwrap().push(image);
            Some(ec2_xml(&action, "<return>true</return>"))
        }
        _ => None,
    }
}

/// Request line, headers, body.
type Request = (String, Vec<String>, Vec<u8>);

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<Request>> {
    let mut first = String::new();
    if r.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l)?;
        let t = l.trim_end().to_string();
        if t.is_empty() {
            break;
        }
        headers.push(t);
    }
    let header = |name: &str| {
        headers.iter().find_map(|h| h.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()))
    };
    let mut body = Vec::new();
    if let Some(n) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut chunk = vec![0u8; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        headers.retain(|h| !h.to_ascii_lowercase().starts_with("transfer-encoding"));
        headers.push(format!("Content-Length: {}", body.len()));
    }
    Ok(Some((first.trim_end().to_string(), headers, body)))
}

fn canned(status: &str, error_type: Option<&str>, body: &str) -> Vec<u8> {
    let mut h = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    if let Some(t) = error_type {
        h.push_str(&format!("x-amzn-ErrorType: {t}\r\n"));
    }
    h.push_str("\r\n");
    let mut v = h.into_bytes();
    v.extend_from_slice(body.as_bytes());
    v
}

fn serve(
    conn: TcpStream,
    upstream: u16,
    fault: Fault,
    seen: &Mutex<Vec<Seen>>,
    faults: &AtomicU64,
    counter: &AtomicU64,
    extras: &Extras,
) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut r = BufReader::new(conn);
    // One request per connection: the response says `Connection: close`.
    let Some((line, headers, body)) = read_request(&mut r)? else { return Ok(()) };
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let text = if body.len() < 64 * 1024 { String::from_utf8_lossy(&body).to_string() } else { String::new() };
    seen.lock().unwrap().push(Seen { method: method.clone(), path: path.clone(), body: text.clone() });
    if method == "POST"
        && let Some(a) = answer(&text, extras)
    {
        return out.write_all(&a);
    }
    let mut body = body;
    let mut headers = headers;
    if matches!(fault, Fault::Untagged) && method == "POST" {
        if text.contains("Action=CreateTags&") && text.contains("ResourceId.1=ami-") {
            faults.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_secs(600));
            return Ok(());
        }
        if text.contains("Action=RegisterImage&") {
            faults.fetch_add(1, Ordering::Relaxed);
            let kept: Vec<&str> = text.split('&').filter(|kv| !kv.starts_with("TagSpecification")).collect();
            body = kept.join("&").into_bytes();
            headers.retain(|h| !h.to_ascii_lowercase().starts_with("content-length:"));
            headers.push(format!("Content-Length: {}", body.len()));
        }
    }
    let is_put = method == "PUT" && path.contains("/blocks/");
    if is_put {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        match fault {
            Fault::Deny => {
                faults.fetch_add(1, Ordering::Relaxed);
                return out.write_all(&canned(
                    "403 Forbidden",
                    Some("AccessDeniedException"),
                    r#"{"message":"User is not authorized to perform ebs:PutSnapshotBlock","Reason":"UNAUTHORIZED_ACCOUNT"}"#,
                ));
            }
            Fault::Flaky => {
                let h = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
                if h % 100 < 20 {
                    faults.fetch_add(1, Ordering::Relaxed);
                    return match n % 4 {
                        0 => out.write_all(&canned(
                            "400 Bad Request",
                            Some("RequestThrottledException"),
                            r#"{"message":"Rate exceeded","Reason":"ACCOUNT_THROTTLED"}"#,
                        )),
                        1 => out.write_all(&canned("503 Service Unavailable", None, "{}")),
                        2 => out.write_all(&canned(
                            "500 Internal Server Error",
                            Some("InternalServerException"),
                            r#"{"message":"internal error"}"#,
                        )),
                        _ => Ok(()), // drop the connection without an answer
                    };
                }
            }
            Fault::Slow(ms) => std::thread::sleep(Duration::from_millis(ms)),
            Fault::NotYet(first) if n < first => {
                faults.fetch_add(1, Ordering::Relaxed);
                return out.write_all(&canned(
                    "400 Bad Request",
                    Some("ValidationException"),
                    r#"{"message":"The snapshot 'snap-0' does not exist.","Reason":"INVALID_SNAPSHOT_ID"}"#,
                ));
            }
            Fault::NotYet(_) => {}
            Fault::None | Fault::Untagged => {}
        }
    }
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut head = format!("{line}\r\n");
    for h in headers.iter().filter(|h| !h.to_ascii_lowercase().starts_with("connection:")) {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp)?;
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").map_or(resp.len(), |p| p + 2);
    let (rhead, rest) = resp.split_at(split);
    let rhead = String::from_utf8_lossy(rhead);
    let mut fixed: String =
        rhead.lines().filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).map(|l| format!("{l}\r\n")).collect();
    fixed.push_str("Connection: close\r\n");
    out.write_all(fixed.as_bytes())?;
    out.write_all(rest)?;
    out.flush()
}

const READER: &str = r#"
import sys, json, hashlib, boto3
endpoint, region, what = sys.argv[1], sys.argv[2], sys.argv[3]
ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name=region)
if what == "blocks":
    ebs = boto3.client("ebs", endpoint_url=endpoint, region_name=region)
    snap = sys.argv[4]
    out, token = {}, None
    while True:
        kw = {"SnapshotId": snap, "MaxResults": 10000}
        if token: kw["NextToken"] = token
        r = ebs.list_snapshot_blocks(**kw)
        for b in r["Blocks"]:
            i = int(b["BlockIndex"])
            g = ebs.get_snapshot_block(SnapshotId=snap, BlockIndex=i, BlockToken=b["BlockToken"])
            out[str(i)] = hashlib.sha256(g["BlockData"].read()).hexdigest()
        token = r.get("NextToken")
        if not token: break
    print(json.dumps(out))
elif what == "mkbucket":
    boto3.client("s3", endpoint_url=endpoint, region_name=region).create_bucket(Bucket=sys.argv[4], CreateBucketConfiguration={"LocationConstraint": region})
    print("{}")
elif what == "object":
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    o = s3.get_object(Bucket=sys.argv[4], Key=sys.argv[5], ChecksumMode="ENABLED")
    body = o["Body"].read()
    print(json.dumps({"sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "checksum": o.get("ChecksumSHA256"), "parts": o.get("PartsCount")}))
elif what == "mpu":
    r = boto3.client("s3", endpoint_url=endpoint, region_name=region).create_multipart_upload(Bucket=sys.argv[4], Key=sys.argv[5])
    print(json.dumps({"id": r["UploadId"]}))
elif what == "bucket":
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=sys.argv[4]).get("Contents", [])]
    uploads = [u["Key"] for u in s3.list_multipart_uploads(Bucket=sys.argv[4]).get("Uploads", [])]
    print(json.dumps({"keys": sorted(keys), "uploads": sorted(uploads)}))
elif what == "fleet":
    # A launch template whose version 1 (neither $Default nor $Latest) an auto-scaling group
    # names, and a launch configuration.
    group_ami, latest_ami, lc_ami = sys.argv[4], sys.argv[5], sys.argv[6]
    ec2.create_launch_template(LaunchTemplateName="fleet", LaunchTemplateData={"ImageId": group_ami, "InstanceType": "t3.micro"})
    ec2.create_launch_template_version(LaunchTemplateName="fleet", LaunchTemplateData={"ImageId": latest_ami, "InstanceType": "t3.micro"})
    ec2.modify_launch_template(LaunchTemplateName="fleet", DefaultVersion="2")
    asg = boto3.client("autoscaling", endpoint_url=endpoint, region_name=region)
    asg.create_auto_scaling_group(AutoScalingGroupName="web-asg", LaunchTemplate={"LaunchTemplateName": "fleet", "Version": "1"}, MinSize=0, MaxSize=1, DesiredCapacity=0, AvailabilityZones=[region + "a"])
    asg.create_launch_configuration(LaunchConfigurationName="old-lc", ImageId=lc_ami, InstanceType="t3.micro")
    print("{}")
elif what == "register":
    vol = ec2.create_volume(Size=1, AvailabilityZone=region + "a")["VolumeId"]
    snap = ec2.create_snapshot(VolumeId=vol)["SnapshotId"]
    img = ec2.register_image(Name=sys.argv[4], RootDeviceName="/dev/sda1", BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"SnapshotId": snap}}])["ImageId"]
    ec2.create_tags(Resources=[img], Tags=[{"Key": "BuiltBy", "Value": "imgforge"}])
    print(json.dumps({"id": img}))
elif what == "mklt":
    r = ec2.create_launch_template(LaunchTemplateName=sys.argv[4], LaunchTemplateData={"ImageId": sys.argv[5], "InstanceType": "t3.micro"})
    print(json.dumps({"id": r["LaunchTemplate"]["LaunchTemplateId"]}))
elif what == "run":
    r = ec2.run_instances(ImageId=sys.argv[4], MinCount=1, MaxCount=1, InstanceType="t3.micro")
    print(json.dumps({"id": r["Instances"][0]["InstanceId"]}))
elif what == "terminate":
    ec2.terminate_instances(InstanceIds=[sys.argv[4]])
    print("{}")
elif what == "channel":
    ssm = boto3.client("ssm", endpoint_url=endpoint, region_name=region)
    try:
        value = ssm.get_parameter(Name=sys.argv[4])["Parameter"]["Value"]
        history = [p["Value"] for p in ssm.get_parameter_history(Name=sys.argv[4])["Parameters"]]
    except ssm.exceptions.ParameterNotFound:
        value, history = None, []
    imgs = {}
    for i in ec2.describe_images(Owners=["self"])["Images"]:
        perms = ec2.describe_image_attribute(ImageId=i["ImageId"], Attribute="launchPermission")["LaunchPermissions"]
        imgs[i["ImageId"]] = {"name": i["Name"], "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])}, "launch": sorted(p.get("UserId", p.get("Group", "")) for p in perms)}
    print(json.dumps({"parameter": value, "history": history, "images": imgs}))
else:
    snaps = ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]
    imgs = ec2.describe_images(Owners=["self"])["Images"]
    print(json.dumps({"snapshots": snaps, "images": imgs}, default=str))
"#;

fn python(endpoint: &str, region: &str, args: &[&str]) -> serde_json::Value {
    let mut c = Command::new("python3");
    c.arg("-c").arg(READER).arg(endpoint).arg(region).args(args);
    aws_env(&mut c, endpoint, region);
    let out = c.output().unwrap();
    assert!(out.status.success(), "boto3 reader failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// SHA-256 (hex) of every block moto holds for `snap`, read back with ListSnapshotBlocks and
/// GetSnapshotBlock.
pub fn snapshot_blocks(endpoint: &str, region: &str, snap: &str) -> std::collections::BTreeMap<u64, String> {
    let v = python(endpoint, region, &["blocks", snap]);
    v.as_object().unwrap().iter().map(|(k, h)| (k.parse().unwrap(), h.as_str().unwrap().to_string())).collect()
}

/// Creates an S3 bucket.
pub fn make_bucket(endpoint: &str, region: &str, bucket: &str) {
    python(endpoint, region, &["mkbucket", bucket]);
}

/// An S3 object's SHA-256 (hex), size, stored checksum and part count.
pub fn object(endpoint: &str, region: &str, bucket: &str, key: &str) -> serde_json::Value {
    python(endpoint, region, &["object", bucket, key])
}

/// A channel on AWS: the SSM parameter's value (null when absent) and history, and each of our
/// AMIs' name, tags and launch permissions.
pub fn channel_state(endpoint: &str, region: &str, parameter: &str) -> serde_json::Value {
    python(endpoint, region, &["channel", parameter])
}

/// Starts a multipart upload and leaves it unfinished; returns its id.
pub fn start_upload(endpoint: &str, region: &str, bucket: &str, key: &str) -> String {
    python(endpoint, region, &["mpu", bucket, key])["id"].as_str().unwrap().to_string()
}

/// A bucket's object keys and unfinished uploads' keys, sorted.
pub fn bucket_state(endpoint: &str, region: &str, bucket: &str) -> (Vec<String>, Vec<String>) {
    let v = python(endpoint, region, &["bucket", bucket]);
    let list = |k: &str| v[k].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()).collect();
    (list("keys"), list("uploads"))
}

/// An auto-scaling group on version 1 of a launch template `fleet` (version 2, with
/// `latest_ami`, is its $Default and $Latest), and a launch configuration `old-lc` of `lc_ami`.
pub fn make_fleet(endpoint: &str, region: &str, group_ami: &str, latest_ami: &str, lc_ami: &str) {
    python(endpoint, region, &["fleet", group_ami, latest_ami, lc_ami]);
}

/// Registers an AMI tagged `BuiltBy=imgforge` (on a snapshot of a new volume); returns its id.
pub fn register_tagged_image(endpoint: &str, region: &str, name: &str) -> String {
    python(endpoint, region, &["register", name])["id"].as_str().unwrap().to_string()
}

/// Creates a launch template whose default version launches `ami`; returns its id.
pub fn make_launch_template(endpoint: &str, region: &str, name: &str, ami: &str) -> String {
    python(endpoint, region, &["mklt", name, ami])["id"].as_str().unwrap().to_string()
}

/// Runs an instance of `ami`; returns its id.
pub fn run_instance(endpoint: &str, region: &str, ami: &str) -> String {
    python(endpoint, region, &["run", ami])["id"].as_str().unwrap().to_string()
}

/// Terminates an instance.
pub fn terminate_instance(endpoint: &str, region: &str, id: &str) {
    python(endpoint, region, &["terminate", id]);
}

/// DescribeSnapshots and DescribeImages (owner self).
pub fn state(endpoint: &str, region: &str) -> serde_json::Value {
    python(endpoint, region, &["state"])
}

/// Tags of a described resource as a map.
pub fn tags(v: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    v["Tags"]
        .as_array()
        .map(|a| a.iter().map(|t| (t["Key"].as_str().unwrap().to_string(), t["Value"].as_str().unwrap().to_string())).collect())
        .unwrap_or_default()
}

// --- raw images and snapshot checks shared by the publish and load tests ---------------------

/// EBS's block size.
pub const BLOCK: u64 = 512 * 1024;
/// A mebibyte.
pub const MIB: u64 = 1 << 20;

/// SHA-256 of every non-zero 512 KiB block of a raw (the blocks a sparse upload must send).
pub fn nonzero_blocks(raw: &Path) -> std::collections::BTreeMap<u64, String> {
    let f = std::fs::File::open(raw).unwrap();
    let size = f.metadata().unwrap().len();
    let mut out = std::collections::BTreeMap::new();
    let mut buf = vec![0u8; BLOCK as usize];
    for i in 0..size.div_ceil(BLOCK) {
        buf.fill(0);
        let len = (size - i * BLOCK).min(BLOCK) as usize;
        f.read_exact_at(&mut buf[..len], i * BLOCK).unwrap();
        if buf.iter().any(|&b| b != 0) {
            out.insert(i, hex::encode(sha2::Sha256::digest(&buf)));
        }
    }
    out
}

/// Deterministic non-compressible-ish bytes.
pub fn fill(seed: u64, buf: &mut [u8]) {
    let mut x = seed | 1;
    for c in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
    }
}

/// A sparse raw of `size_mib` MiB: data in `regions` (offset MiB, length MiB), a written
/// all-zero region, holes elsewhere, and a short data tail in the last block.
pub fn image(dir: &Path, name: &str, size_mib: u64, regions: &[(u64, u64)]) -> std::path::PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(size_mib * MIB).unwrap();
    for (i, &(off, len)) in regions.iter().enumerate() {
        let mut b = vec![0u8; (len * MIB) as usize];
        fill(0xfeed + i as u64 * 7919 + off, &mut b);
        f.write_all_at(&b, off * MIB).unwrap();
    }
    f.write_all_at(&vec![0u8; MIB as usize], (size_mib - 3) * MIB).unwrap();
    f.write_all_at(b"tail", size_mib * MIB - 100).unwrap();
    p
}

pub fn assert_readback(endpoint: &str, region: &str, snap: &str, want: &std::collections::BTreeMap<u64, String>) {
    let got = snapshot_blocks(endpoint, region, snap);
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(k)).take(5).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "blocks missing {missing:?}, unexpected {extra:?} (of {} wanted, {} got)",
        want.len(),
        got.len()
    );
    for (i, h) in want {
        assert_eq!(&got[i], h, "block {i} differs");
    }
}

/// Exactly one snapshot of ours and one AMI exist. (moto's RegisterImage also makes an
/// "Auto-created snapshot for AMI …" of its own, untagged: it is not counted.)
pub fn one_of_each(endpoint: &str, region: &str) -> serde_json::Value {
    let mut st = state(endpoint, region);
    let ours: Vec<serde_json::Value> = st["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| tags(s).get("BuiltBy").map(String::as_str) == Some("imgforge"))
        .cloned()
        .collect();
    st["snapshots"] = serde_json::Value::Array(ours);
    assert_eq!(st["snapshots"].as_array().unwrap().len(), 1, "snapshots: {:#}", st["snapshots"]);
    assert_eq!(st["images"].as_array().unwrap().len(), 1, "images: {:#}", st["images"]);
    st
}
