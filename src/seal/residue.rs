//! The residue scan: after the scrub, every regular file of the image is searched for what must
//! not ship — private keys, AWS credentials, the build machine's hostname, MACs and IPs, and
//! the provisioner's paths.
//!
//! One multi-literal pass per file (Teddy from aho-corasick, SIMD) finds every literal, case
//! variants included; each candidate is then verified in place (boundaries, the shape of what
//! follows). Files are read
//! whole (in 64 MiB chunks with overlap beyond that), in parallel with rayon. Findings never
//! carry a secret.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use aho_corasick::{AhoCorasick, MatchKind};
use nix::errno::Errno;
use rayon::prelude::*;

use crate::chroot::resolve::{ResolveError, Root};
use crate::seal::netconf::parse_mac;
use crate::seal::walk;

/// The scan could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum ResidueError {
    /// The image root could not be opened.
    #[error(transparent)]
    Root(#[from] ResolveError),
    /// An operation on a path inside the image failed.
    #[error("Residue scan: failed to {op} {path} inside the image: {source}")]
    Io {
        /// What we tried ("open", "read", …).
        op: &'static str,
        /// The path as seen inside the image.
        path: String,
        /// Cause.
        #[source]
        source: Errno,
    },
    /// The search automaton could not be built from the needles.
    #[error("Residue scan: cannot build the search patterns: {0}")]
    Patterns(#[from] aho_corasick::BuildError),
}

/// What identifies the build machine and the provisioning run.
#[derive(Debug, Clone, Default)]
pub struct Needles {
    /// Hostnames (and FQDNs) of the build machine.
    pub hostnames: Vec<String>,
    /// MAC addresses, any form.
    pub macs: Vec<String>,
    /// IPv4 or IPv6 addresses.
    pub ips: Vec<String>,
    /// Paths the provisioner used on the build machine.
    pub paths: Vec<String>,
    /// Values the seal removed (secrets of deleted files, the old machine id): the file scan
    /// only notes which of them are still in a live file; the raw pass looks for the others.
    pub removed: Vec<Removed>,
}

/// Which needle a pattern stands for (index into its list in [`Needles`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NeedleRef {
    /// `hostnames[i]`.
    Hostname(usize),
    /// `macs[i]`.
    Mac(usize),
    /// `ips[i]`.
    Ip(usize),
    /// `paths[i]`.
    Path(usize),
    /// `removed[i]`.
    Removed(usize),
}

impl Needles {
    /// The needles not in `live` (found in live files by [`scan`]): what the seal removed and
    /// no file of the image still holds.
    pub fn without(&self, live: &std::collections::BTreeSet<NeedleRef>) -> Needles {
        fn keep<T: Clone>(v: &[T], live: &std::collections::BTreeSet<NeedleRef>, r: fn(usize) -> NeedleRef) -> Vec<T> {
            v.iter().enumerate().filter(|(i, _)| !live.contains(&r(*i))).map(|(_, x)| x.clone()).collect()
        }
        Needles {
            hostnames: keep(&self.hostnames, live, NeedleRef::Hostname),
            macs: keep(&self.macs, live, NeedleRef::Mac),
            ips: keep(&self.ips, live, NeedleRef::Ip),
            paths: keep(&self.paths, live, NeedleRef::Path),
            removed: keep(&self.removed, live, NeedleRef::Removed),
        }
    }
}

/// What a removed value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RemovedKind {
    /// A line of a PEM/OpenSSH private key's base64 body.
    PrivateKey,
    /// An AWS access key id.
    AwsAccessKey,
    /// An AWS secret access key.
    AwsSecretKey,
    /// The image's previous machine id.
    MachineId,
}

/// A value the seal removed from the image, searched for byte for byte. Its `Debug` never
/// shows the value, and it is never serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct Removed {
    /// What it is.
    pub kind: RemovedKind,
    /// The value.
    pub bytes: Vec<u8>,
    /// The image path it was removed from.
    pub from: String,
}

impl std::fmt::Debug for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Removed({})", self.label())
    }
}

impl Removed {
    /// What a report may say about it: the kind and where it came from, never the value.
    pub fn label(&self) -> String {
        let what = match self.kind {
            RemovedKind::PrivateKey => "private key (redacted)",
            RemovedKind::AwsAccessKey => "AWS access key id (redacted)",
            RemovedKind::AwsSecretKey => "AWS secret access key (redacted)",
            RemovedKind::MachineId => "old machine id (redacted)",
        };
        format!("{what} removed from {}", self.from)
    }
}

/// What a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingKind {
    /// A PEM private key.
    PrivateKey,
    /// An AWS access key id.
    AwsAccessKey,
    /// An AWS secret access key.
    AwsSecretKey,
    /// The build machine's hostname.
    Hostname,
    /// A MAC address of the build machine.
    Mac,
    /// An IP address of the build machine.
    Ip,
    /// A path of the provisioner.
    ProvisionerPath,
}

impl FindingKind {
    /// Every kind.
    pub const ALL: [FindingKind; 7] = [
        FindingKind::PrivateKey,
        FindingKind::AwsAccessKey,
        FindingKind::AwsSecretKey,
        FindingKind::Hostname,
        FindingKind::Mac,
        FindingKind::Ip,
        FindingKind::ProvisionerPath,
    ];

    /// The kebab-case name (as serialised).
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::PrivateKey => "private-key",
            FindingKind::AwsAccessKey => "aws-access-key",
            FindingKind::AwsSecretKey => "aws-secret-key",
            FindingKind::Hostname => "hostname",
            FindingKind::Mac => "mac",
            FindingKind::Ip => "ip",
            FindingKind::ProvisionerPath => "provisioner-path",
        }
    }

    /// The kind named `name` (as [`FindingKind::name`] gives it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// One thing that must not ship.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// What it is.
    pub kind: FindingKind,
    /// The file, as seen in the image (`/etc/foo`).
    pub path: String,
    /// 1-based line of the first occurrence.
    pub line: u64,
    /// What was found, never the secret itself; `(N times)` when it occurs more than once.
    pub detail: String,
}

/// The scan's result.
#[derive(Debug, Default, serde::Serialize)]
pub struct Scan {
    /// Findings, by path, then line.
    pub findings: Vec<Finding>,
    /// Regular files scanned.
    pub files: u64,
    /// Bytes scanned.
    pub bytes: u64,
    /// Needles not searched for and parts of the tree not entered, with why.
    pub notes: Vec<String>,
    /// Needles found in a live file (findings or not): what the raw pass must not look for.
    #[serde(skip)]
    pub live: std::collections::BTreeSet<NeedleRef>,
}

/// Hostnames too generic to mean the build machine: they occur all over a stock tree.
const GENERIC_HOSTNAMES: [&str; 40] = [
    "localhost",
    "localhost.localdomain",
    "localdomain",
    "debian",
    "ubuntu",
    "fedora",
    "centos",
    "rocky",
    "almalinux",
    "rhel",
    "amzn",
    "alpine",
    "linux",
    "host",
    "server",
    "node",
    "vm",
    "default",
    "none",
    "(none)",
    "builder",
    "build",
    "arch",
    "archlinux",
    "opensuse",
    "suse",
    "sles",
    "oracle",
    "kali",
    "raspberrypi",
    "unknown",
    "client",
    "test",
    "example",
    "worker",
    "instance",
    "machine",
    "image",
    "guest",
    "container",
];

/// Minimum length of a provisioner path searched for.
const MIN_PATH: usize = 6;
/// Files are read in chunks of this size.
const CHUNK: usize = 64 << 20;
/// Bytes kept before each later chunk, so candidates can look back (line start, boundary).
const BACK: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum What {
    Pem,
    AwsKeyId,
    AwsSecret,
    Hostname,
    Mac,
    Ip4,
    Ip6,
    Path,
    /// A removed value, byte for byte.
    Exact(RemovedKind),
}

#[derive(Debug)]
pub(crate) struct Pattern {
    what: What,
    /// The exact bytes searched for (case variants are separate patterns).
    bytes: Vec<u8>,
    /// The finding's kind and detail, for needles.
    label: Option<(FindingKind, String)>,
    /// The needle it stands for (`None` for the shapes: keys, AWS credentials).
    needle: Option<NeedleRef>,
}

/// Finds the next candidate start. Teddy (SIMD) when the patterns allow it, which is nearly
/// as fast as reading the file; a prefiltered automaton otherwise.
enum Matcher {
    Packed(aho_corasick::packed::Searcher),
    Automaton(AhoCorasick),
}

impl Matcher {
    fn next(&self, hay: &[u8], from: usize) -> Option<usize> {
        match self {
            Matcher::Packed(s) => s.find_in(hay, aho_corasick::Span::from(from..hay.len())).map(|m| m.start()),
            Matcher::Automaton(ac) => ac.find(aho_corasick::Input::new(hay).span(from..hay.len())).map(|m| m.start()),
        }
    }
}

/// The compiled search: shapes (keys, AWS credentials) and needles.
pub(crate) struct Engine {
    matcher: Matcher,
    patterns: Vec<Pattern>,
    /// Bytes after a candidate's start that verification may read.
    pub(crate) overlap: usize,
}

/// Which patterns an [`Engine`] has besides the needles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shapes {
    /// Also private keys and AWS credentials by their shape (the file scan).
    Yes,
    /// Only the needles (the raw pass: a legitimate key in a live file must not fire).
    No,
}

impl Engine {
    pub(crate) fn new(needles: &Needles, notes: &mut Vec<String>, shapes: Shapes) -> Result<Self, ResidueError> {
        let mut patterns: Vec<Pattern> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut add_bytes = |what: What, v: Vec<u8>, label: Option<(FindingKind, String)>, needle: Option<NeedleRef>| {
            if seen.insert((what, v.clone())) {
                patterns.push(Pattern { what, bytes: v, label, needle });
            }
        };
        let mut add = |what: What, variants: &[String], label: Option<(FindingKind, String)>, needle: Option<NeedleRef>| {
            for v in variants {
                add_bytes(what, v.clone().into_bytes(), label.clone(), needle);
            }
        };
        if shapes == Shapes::Yes {
            add(What::Pem, &["-----BEGIN ".into()], None, None);
            add(What::AwsKeyId, &["AKIA".into(), "ASIA".into()], None, None);
            // `aws_` is checked in any case when verifying; the rest is searched for in lower,
            // upper and capitalised case.
            add(What::AwsSecret, &["secret_access_key".into(), "SECRET_ACCESS_KEY".into(), "Secret_Access_Key".into()], None, None);
        }
        let cases = |s: &str| [s.to_string(), s.to_ascii_lowercase(), s.to_ascii_uppercase()];
        for (i, h) in needles.hostnames.iter().enumerate() {
            let h = h.trim().trim_end_matches('.');
            if h.is_empty() {
                continue;
            }
            if h.len() < 4 || GENERIC_HOSTNAMES.contains(&h.to_ascii_lowercase().as_str()) {
                notes.push(format!("hostname {h:?} not searched for: too short or too generic"));
                continue;
            }
            add(What::Hostname, &cases(h), Some((FindingKind::Hostname, format!("hostname {h}"))), Some(NeedleRef::Hostname(i)));
        }
        for (i, m) in needles.macs.iter().enumerate() {
            let Some(mac) = parse_mac(m.trim()) else {
                notes.push(format!("MAC {m:?} not searched for: not a 6-octet MAC"));
                continue;
            };
            if mac == "00:00:00:00:00:00" || mac == "ff:ff:ff:ff:ff:ff" {
                notes.push(format!("MAC {mac} not searched for: not a NIC's address"));
                continue;
            }
            let dash = mac.replace(':', "-");
            let forms = [mac.clone(), mac.to_ascii_uppercase(), dash.clone(), dash.to_ascii_uppercase()];
            add(What::Mac, &forms, Some((FindingKind::Mac, format!("MAC {mac}"))), Some(NeedleRef::Mac(i)));
        }
        for (i, ip) in needles.ips.iter().enumerate() {
            let ip = ip.trim();
            let label = Some((FindingKind::Ip, format!("IP {ip}")));
            match ip.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(_)) => add(What::Ip4, &[ip.to_string()], label, Some(NeedleRef::Ip(i))),
                Ok(std::net::IpAddr::V6(_)) => add(What::Ip6, &cases(ip), label, Some(NeedleRef::Ip(i))),
                Err(_) => notes.push(format!("IP {ip:?} not searched for: not an IP address")),
            }
        }
        for (i, p) in needles.paths.iter().enumerate() {
            if p.len() < MIN_PATH {
                notes.push(format!("provisioner path {p:?} not searched for: shorter than {MIN_PATH} bytes"));
                continue;
            }
            let label = Some((FindingKind::ProvisionerPath, format!("provisioner path {p}")));
            add(What::Path, std::slice::from_ref(p), label, Some(NeedleRef::Path(i)));
        }
        for (i, r) in needles.removed.iter().enumerate() {
            if r.bytes.len() < MIN_REMOVED {
                notes.push(format!("{} not searched for: shorter than {MIN_REMOVED} bytes", r.label()));
                continue;
            }
            add_bytes(What::Exact(r.kind), r.bytes.clone(), None, Some(NeedleRef::Removed(i)));
        }
        let longest = patterns.iter().map(|p| p.bytes.len()).max().unwrap_or(0);
        let packed = aho_corasick::packed::Config::new()
            .match_kind(aho_corasick::packed::MatchKind::LeftmostFirst)
            .builder()
            .extend(patterns.iter().map(|p| &p.bytes))
            .build();
        let matcher = match packed {
            Some(s) => Matcher::Packed(s),
            None => {
                Matcher::Automaton(AhoCorasick::builder().match_kind(MatchKind::LeftmostFirst).build(patterns.iter().map(|p| &p.bytes))?)
            }
        };
        Ok(Self { matcher, patterns, overlap: longest + 1024 })
    }

    /// Every pattern occurring at `buf[s..]`.
    fn at<'a>(&'a self, buf: &'a [u8], s: usize) -> impl Iterator<Item = &'a Pattern> + 'a {
        self.patterns.iter().filter(move |p| buf[s..].starts_with(&p.bytes))
    }

    /// The needles it searches for (those not set aside as too short or too generic).
    pub(crate) fn needles(&self) -> std::collections::BTreeSet<NeedleRef> {
        self.patterns.iter().filter_map(|p| p.needle).collect()
    }

    /// Whether the engine searches for nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Every needle occurring in `buf` with its boundaries, starting in `from..limit`: calls
    /// `f(start, needle)`. Shapes are not reported. `buf[0]` is not taken as a line start.
    pub(crate) fn needles_in(&self, buf: &[u8], from: usize, limit: usize, mut f: impl FnMut(usize, NeedleRef)) {
        if self.patterns.is_empty() {
            return;
        }
        let mut from = from;
        while let Some(s) = self.matcher.next(buf, from) {
            if s >= limit {
                break;
            }
            from = s + 1;
            for pat in self.at(buf, s) {
                let Some(needle) = pat.needle else { continue };
                let e = s + pat.bytes.len();
                let ok = match pat.what {
                    What::Exact(kind) => exact_ok(kind, buf, s, e),
                    _ => verify(pat, buf, s, e, false).is_some(),
                };
                if ok {
                    f(s, needle);
                }
            }
        }
    }
}

/// Removed values shorter than this are not searched for (they would match by chance).
const MIN_REMOVED: usize = 16;

/// The boundaries of a removed value found at `buf[s..e]`.
fn exact_ok(kind: RemovedKind, buf: &[u8], s: usize, e: usize) -> bool {
    let before = if s == 0 { None } else { Some(buf[s - 1]) };
    let after = buf.get(e).copied();
    let not = |c: Option<u8>, f: fn(u8) -> bool| c.is_none_or(|c| !f(c));
    match kind {
        RemovedKind::PrivateKey => true,
        RemovedKind::AwsAccessKey => not(before, |c| c.is_ascii_alphanumeric()) && not(after, |c| c.is_ascii_alphanumeric()),
        RemovedKind::AwsSecretKey => {
            let key = |c: u8| c.is_ascii_alphanumeric() || c == b'/' || c == b'+';
            not(before, key) && not(after, key)
        }
        RemovedKind::MachineId => not(before, |c| c.is_ascii_hexdigit()) && not(after, |c| c.is_ascii_hexdigit()),
    }
}

/// Scans every regular file under `root` for residue. `skip`: image paths not entered (e.g.
/// `["/proc", "/sys", "/dev", "/run"]`). Symlinks are never followed; pseudo filesystems
/// mounted inside the tree are not entered; other filesystems mounted inside it (e.g. `/boot`)
/// are scanned.
pub fn scan(root: &Root, needles: &Needles, skip: &[&str]) -> Result<Scan, ResidueError> {
    scan_chunked(root, needles, skip, CHUNK)
}

fn scan_chunked(root: &Root, needles: &Needles, skip: &[&str], chunk: usize) -> Result<Scan, ResidueError> {
    let mut result = Scan::default();
    let engine = Engine::new(needles, &mut result.notes, Shapes::Yes)?;
    let top = root.dir(Path::new("/"))?;
    let walked = walk::walk(top.as_fd(), skip)?;
    result.notes.extend(walked.notes);
    let per_file: Vec<Result<Option<FileScan>, ResidueError>> = walked
        .files
        .par_iter()
        .with_min_len(16)
        .map_init(Vec::new, |buf, path| scan_file(&engine, top.as_fd(), path, buf, chunk))
        .collect();
    let per_link: Vec<Result<FileScan, ResidueError>> =
        walked.links.par_iter().with_min_len(64).map_init(Vec::new, |buf, (path, target)| scan_link(&engine, path, target, buf)).collect();
    for r in per_file {
        let Some(f) = r? else { continue };
        result.files += 1;
        result.bytes += f.bytes;
        result.findings.extend(f.findings);
        result.live.extend(f.live);
    }
    for r in per_link {
        let f = r?;
        result.findings.extend(f.findings);
        result.live.extend(f.live);
    }
    result.findings.sort_by(|a, b| (&a.path, a.line, a.kind).cmp(&(&b.path, b.line, b.kind)));
    Ok(result)
}

struct FileScan {
    bytes: u64,
    findings: Vec<Finding>,
    live: Vec<NeedleRef>,
}

/// A finding in progress: first line and count.
struct Hit {
    kind: FindingKind,
    detail: String,
    line: u64,
    count: u64,
}

/// Newlines before a position of the current buffer, counted incrementally.
struct Lines {
    /// Newlines in the file before the buffer.
    before: u64,
    pos: usize,
    count: u64,
}

impl Lines {
    fn line_at(&mut self, buf: &[u8], at: usize) -> u64 {
        if at >= self.pos {
            self.count += memchr::memchr_iter(b'\n', &buf[self.pos..at]).count() as u64;
        } else {
            self.count -= memchr::memchr_iter(b'\n', &buf[at..self.pos]).count() as u64;
        }
        self.pos = at;
        self.before + self.count + 1
    }

    /// The buffer now starts at `from` of the old one.
    fn shift(&mut self, buf: &[u8], from: usize) {
        let nl = self.line_at(buf, from) - 1;
        self.before = nl;
        self.pos = 0;
        self.count = 0;
    }
}

fn scan_file(
    engine: &Engine,
    top: std::os::fd::BorrowedFd<'_>,
    path: &Path,
    buf: &mut Vec<u8>,
    chunk: usize,
) -> Result<Option<FileScan>, ResidueError> {
    let Some(file) = walk::open_file(top, path)? else { return Ok(None) };
    scan_reader(engine, file, path, buf, chunk).map(Some)
}

/// A symlink's target searched as the link's text: a link naming the build's directory or a
/// build host's name is residue as much as a file saying so.
fn scan_link(engine: &Engine, path: &Path, target: &[u8], buf: &mut Vec<u8>) -> Result<FileScan, ResidueError> {
    let mut f = scan_reader(engine, target, path, buf, CHUNK)?;
    for finding in &mut f.findings {
        finding.detail = format!("{} in the symlink's target", finding.detail);
    }
    Ok(f)
}

fn scan_reader(engine: &Engine, mut file: impl Read, path: &Path, buf: &mut Vec<u8>, chunk: usize) -> Result<FileScan, ResidueError> {
    let shown = path.to_string_lossy();
    let read_err = |e: std::io::Error| ResidueError::Io {
        op: "read",
        path: shown.to_string(),
        source: e.raw_os_error().map(Errno::from_raw).unwrap_or(Errno::EIO),
    };
    let mut hits: Vec<Hit> = Vec::new();
    let mut live: Vec<NeedleRef> = Vec::new();
    let mut lines = Lines { before: 0, pos: 0, count: 0 };
    let mut bytes = 0u64;
    let mut min_start = 0usize;
    // Whether `buf[0]` is still the file's first byte.
    let mut at_file_start = true;
    buf.clear();
    loop {
        let want = chunk;
        let got = (&mut file).take(want as u64).read_to_end(buf).map_err(read_err)?;
        bytes += got as u64;
        let last = got < want;
        let limit = if last { buf.len() } else { buf.len().saturating_sub(engine.overlap) };
        let mut from = min_start;
        while let Some(s) = engine.matcher.next(buf, from) {
            if s >= limit {
                break;
            }
            from = s + 1;
            for pat in engine.at(buf, s) {
                if let What::Exact(kind) = pat.what {
                    if let Some(n) = pat.needle.filter(|n| !live.contains(n) && exact_ok(kind, buf, s, s + pat.bytes.len())) {
                        live.push(n);
                    }
                    continue;
                }
                let Some((kind, detail)) = verify(pat, buf, s, s + pat.bytes.len(), at_file_start) else {
                    continue;
                };
                if let Some(n) = pat.needle.filter(|n| !live.contains(n)) {
                    live.push(n);
                }
                match hits.iter_mut().find(|h| h.kind == kind && h.detail == detail) {
                    Some(h) => h.count += 1,
                    None => {
                        let line = lines.line_at(buf, s);
                        hits.push(Hit { kind, detail, line, count: 1 });
                    }
                }
            }
        }
        if last {
            break;
        }
        let keep_from = limit.saturating_sub(BACK);
        lines.shift(buf, keep_from);
        buf.drain(..keep_from);
        at_file_start &= keep_from == 0;
        min_start = limit - keep_from;
    }
    let findings = hits
        .into_iter()
        .map(|h| Finding {
            kind: h.kind,
            path: shown.to_string(),
            line: h.line,
            detail: if h.count > 1 { format!("{} ({} times)", h.detail, h.count) } else { h.detail },
        })
        .collect();
    Ok(FileScan { bytes, findings, live })
}

/// The engine of [`secrets_in`]: the shapes only.
fn shapes_engine() -> Option<&'static Engine> {
    static ENGINE: std::sync::OnceLock<Option<Engine>> = std::sync::OnceLock::new();
    ENGINE.get_or_init(|| Engine::new(&Needles::default(), &mut Vec::new(), Shapes::Yes).ok()).as_ref()
}

/// Body lines of a private key taken as its needles: the second, the middle and the last
/// full line (the first line of an OpenSSH key is the same in every key of its type).
const KEY_LINES: usize = 3;
/// Base64 lines shorter than this are not taken from a key body.
const MIN_KEY_LINE: usize = 40;

/// The secret values in `data` (a file the seal is about to delete or empty, at image path
/// `from`): AWS secret keys and access key ids, and lines of private key bodies, verified as
/// the residue scan verifies them.
pub fn secrets_in(data: &[u8], from: &str) -> Vec<Removed> {
    let Some(engine) = shapes_engine() else { return Vec::new() };
    let mut out: Vec<Removed> = Vec::new();
    let mut push = |kind: RemovedKind, bytes: &[u8]| {
        if !out.iter().any(|r| r.bytes == bytes) {
            out.push(Removed { kind, bytes: bytes.to_vec(), from: from.to_string() });
        }
    };
    let mut from_pos = 0;
    while let Some(s) = engine.matcher.next(data, from_pos) {
        from_pos = s + 1;
        for pat in engine.at(data, s) {
            let e = s + pat.bytes.len();
            match pat.what {
                What::AwsKeyId if verify(pat, data, s, e, true).is_some() => push(RemovedKind::AwsAccessKey, &data[s..s + 20]),
                What::AwsSecret if verify(pat, data, s, e, true).is_some() => {
                    if let Some(v) = aws_secret_at(data, e) {
                        push(RemovedKind::AwsSecretKey, &data[v..v + 40]);
                    }
                }
                What::Pem if pem(data, s, e, true).is_some() => {
                    for line in key_lines(data, e) {
                        push(RemovedKind::PrivateKey, line);
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The needle lines of the key body after a verified `-----BEGIN ` ending at `e`: base64
/// runs of at least [`MIN_KEY_LINE`] characters up to `-----END` (plain or `\n`-escaped).
fn key_lines(data: &[u8], e: usize) -> Vec<&[u8]> {
    let window = &data[e..data.len().min(e + 64 * 1024)];
    let end = memchr::memmem::find(window, b"-----END").unwrap_or(window.len());
    let body = &window[..end];
    let lines: Vec<&[u8]> = body
        .split(|c| !(c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/' || *c == b'='))
        .filter(|l| l.len() >= MIN_KEY_LINE)
        .collect();
    let mut picked: Vec<&[u8]> = Vec::new();
    let wanted = match lines.len() {
        0 => vec![],
        1 => vec![0],
        n => vec![1, n / 2, n - 1],
    };
    for i in wanted.into_iter().take(KEY_LINES) {
        if !picked.contains(&lines[i]) {
            picked.push(lines[i]);
        }
    }
    picked
}

fn b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'='
}

/// Checks the candidate `buf[s..e]` for `pat`; the finding's kind and detail if it holds.
/// `at_file_start`: `buf[0]` is the file's first byte.
fn verify(pat: &Pattern, buf: &[u8], s: usize, e: usize, at_file_start: bool) -> Option<(FindingKind, String)> {
    let before = if s == 0 { None } else { Some(buf[s - 1]) };
    let after = buf.get(e).copied();
    let not = |c: Option<u8>, f: fn(u8) -> bool| c.is_none_or(|c| !f(c));
    match pat.what {
        What::Pem => pem(buf, s, e, at_file_start).map(|begin| (FindingKind::PrivateKey, begin)),
        What::AwsKeyId => {
            let id = buf.get(s..s + 20)?;
            let ok = not(before, |c| c.is_ascii_alphanumeric())
                && id[4..].iter().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
                && not(buf.get(s + 20).copied(), |c| c.is_ascii_alphanumeric());
            ok.then(|| (FindingKind::AwsAccessKey, format!("AWS access key id {}…(redacted)", String::from_utf8_lossy(&id[..4]))))
        }
        What::AwsSecret => (s >= 4 && buf[s - 4..s].eq_ignore_ascii_case(b"aws_") && aws_secret(buf, e))
            .then(|| (FindingKind::AwsSecretKey, "AWS secret access key (redacted)".to_string())),
        What::Hostname => {
            let word = |c: u8| c.is_ascii_alphanumeric() || c == b'.' || c == b'-';
            (not(before, word) && not(after, word)).then(|| pat.label.clone()).flatten()
        }
        What::Mac => {
            let part = |c: u8| c.is_ascii_hexdigit() || c == b':' || c == b'-';
            (not(before, part) && not(after, part)).then(|| pat.label.clone()).flatten()
        }
        What::Ip4 => {
            let part = |c: u8| c.is_ascii_digit() || c == b'.';
            (not(before, part) && not(after, part)).then(|| pat.label.clone()).flatten()
        }
        What::Ip6 => {
            let part = |c: u8| c.is_ascii_hexdigit() || c == b':';
            (not(before, part) && not(after, part)).then(|| pat.label.clone()).flatten()
        }
        What::Path => pat.label.clone(),
        What::Exact(_) => None,
    }
}

/// `-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----` at the start of a line (after optional blanks),
/// then a line break, optional RFC 1421 header lines (`Proc-Type: …`) and blank lines, and a
/// base64 line of at least 20 characters. Inside JSON or source strings the line break may be
/// the two characters `\n`. The string literal in binaries (followed by NUL or a quote) never
/// matches. The BEGIN line if it holds.
fn pem(buf: &[u8], s: usize, e: usize, at_file_start: bool) -> Option<String> {
    let mut t = e;
    while t < buf.len() && t - e < 64 && (buf[t].is_ascii_uppercase() || buf[t].is_ascii_digit() || buf[t] == b' ') {
        t += 1;
    }
    let label = &buf[e..t];
    if !(label.ends_with(b"PRIVATE KEY") || label.ends_with(b"PRIVATE KEY BLOCK")) || !buf[t..].starts_with(b"-----") {
        return None;
    }
    let begin = String::from_utf8_lossy(&buf[s..t + 5]).into_owned();
    let mut p = t + 5;
    let mut line_start = s;
    while line_start > 0 && matches!(buf[line_start - 1], b' ' | b'\t') {
        line_start -= 1;
    }
    let at_line_start = if line_start == 0 { at_file_start } else { buf[line_start - 1] == b'\n' };
    let escaped = buf[p..].starts_with(b"\\n") || buf[p..].starts_with(b"\\r\\n");
    if escaped {
        p += if buf[p + 1] == b'r' { 4 } else { 2 };
    } else if at_line_start && buf[p..].starts_with(b"\n") {
        p += 1;
    } else if at_line_start && buf[p..].starts_with(b"\r\n") {
        p += 2;
    } else {
        return None;
    }
    // Skip up to 4 header or blank lines.
    for _ in 0..5 {
        let rest = &buf[p..];
        let run = rest.iter().take_while(|c| b64(**c)).count();
        if run >= 20 {
            return Some(begin);
        }
        let end_of_line = if escaped {
            memchr::memmem::find(&rest[..rest.len().min(256)], b"\\n").map(|i| i + 2)
        } else {
            memchr::memchr(b'\n', &rest[..rest.len().min(256)]).map(|i| i + 1)
        }?;
        let line = &rest[..end_of_line];
        let header = line.contains(&b':') || line.iter().all(|c| c.is_ascii_whitespace() || *c == b'\\' || *c == b'n' || *c == b'r');
        if !header {
            return None;
        }
        p += end_of_line;
    }
    None
}

/// After `aws_secret_access_key`: an optional closing quote, blanks, `=` or `:`, blanks, an
/// optional quote, then exactly 40 characters of `[A-Za-z0-9/+]`.
fn aws_secret(buf: &[u8], e: usize) -> bool {
    aws_secret_at(buf, e).is_some()
}

/// Where the 40 characters of [`aws_secret`] start.
fn aws_secret_at(buf: &[u8], e: usize) -> Option<usize> {
    let mut p = e;
    let blank = |c: u8| c == b' ' || c == b'\t';
    if matches!(buf.get(p), Some(b'"' | b'\'')) {
        p += 1;
    }
    while buf.get(p).is_some_and(|c| blank(*c)) {
        p += 1;
    }
    if !matches!(buf.get(p), Some(b'=' | b':')) {
        return None;
    }
    p += 1;
    while buf.get(p).is_some_and(|c| blank(*c)) {
        p += 1;
    }
    if matches!(buf.get(p), Some(b'"' | b'\'')) {
        p += 1;
    }
    let key = |c: &u8| c.is_ascii_alphanumeric() || *c == b'/' || *c == b'+';
    let run = buf[p.min(buf.len())..].iter().take(41).take_while(|c| key(c)).count();
    (run == 40).then_some(p)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\nQyNTUxOQAAACDx9V8Yf0iJ3nqYF4dJq2J1ZkOQ8mYQ6xkq0u5m3y0wPQAAAJgx3m6gMd5u\n-----END OPENSSH PRIVATE KEY-----\n";

    fn needles() -> Needles {
        Needles {
            hostnames: vec!["upstream-builder".into(), "debian".into(), "vm".into()],
            macs: vec!["52:54:00:AB:CD:EF".into()],
            ips: vec!["10.0.2.15".into(), "fd00::15".into()],
            paths: vec!["/var/tmp/imgforge-provision".into(), "/tmp".into()],
            removed: vec![],
        }
    }

    fn tree(files: &[(&str, &[u8])]) -> (tempfile::TempDir, Root) {
        let img = tempfile::tempdir().unwrap();
        for (path, data) in files {
            let p = img.path().join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, data).unwrap();
        }
        let root = Root::open(img.path()).unwrap();
        (img, root)
    }

    fn found(scan: &Scan) -> Vec<(FindingKind, &str, u64, &str)> {
        scan.findings.iter().map(|f| (f.kind, f.path.as_str(), f.line, f.detail.as_str())).collect()
    }

    #[test]
    fn every_kind_found_with_path_and_line() {
        let json_key = br#"{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\n-----END PRIVATE KEY-----\n"}"#;
        let legacy = b"x\n  -----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,9F3A0B1C2D3E4F5061728394A5B6C7D8\n\nMIIEowIBAAKCAQEAw6g8zQ0sKJvYq4QOa1c0xq1UQm1b4f3P0e2rC5y+Zt0q\n";
        let (_img, root) = tree(&[
            ("/root/.ssh/id_ed25519", KEY.as_bytes()),
            ("/root/.aws/credentials", b"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\nAWS_Secret_Access_Key = \"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"\n"),
            ("/etc/hosts", b"127.0.0.1 localhost\n127.0.1.1 upstream-builder\n# upstream-builder\n::1 UPSTREAM-BUILDER\n"),
            ("/var/log/installer/syslog", b"boot\nlink up\neth0: MAC 52-54-00-ab-cd-ef\n"),
            ("/var/lib/dhcp/dhclient.eth0.leases", b"lease {\n  fixed-address 10.0.2.15;\n}\n"),
            ("/etc/motd", b"\n\n\n\nbuilt from /var/tmp/imgforge-provision/run.sh\n"),
            ("/opt/app/sa.json", json_key),
            ("/etc/ssl/private/legacy.pem", legacy),
            ("/etc/v6", b"addr fd00::15/64\n"),
        ]);
        let scan = scan(&root, &needles(), &[]).unwrap();
        assert_eq!(
            found(&scan),
            vec![
                (FindingKind::Hostname, "/etc/hosts", 2, "hostname upstream-builder (3 times)"),
                (FindingKind::ProvisionerPath, "/etc/motd", 5, "provisioner path /var/tmp/imgforge-provision"),
                (FindingKind::PrivateKey, "/etc/ssl/private/legacy.pem", 2, "-----BEGIN RSA PRIVATE KEY-----"),
                (FindingKind::Ip, "/etc/v6", 1, "IP fd00::15"),
                (FindingKind::PrivateKey, "/opt/app/sa.json", 1, "-----BEGIN PRIVATE KEY-----"),
                (FindingKind::AwsAccessKey, "/root/.aws/credentials", 2, "AWS access key id AKIA…(redacted)"),
                (FindingKind::AwsSecretKey, "/root/.aws/credentials", 3, "AWS secret access key (redacted)"),
                (FindingKind::PrivateKey, "/root/.ssh/id_ed25519", 1, "-----BEGIN OPENSSH PRIVATE KEY-----"),
                (FindingKind::Ip, "/var/lib/dhcp/dhclient.eth0.leases", 2, "IP 10.0.2.15"),
                (FindingKind::Mac, "/var/log/installer/syslog", 3, "MAC 52:54:00:ab:cd:ef"),
            ]
        );
        assert_eq!(scan.files, 9);
        assert!(scan.notes.iter().any(|n| n.contains("\"debian\"")), "{:?}", scan.notes);
        assert!(scan.notes.iter().any(|n| n.contains("\"vm\"")), "{:?}", scan.notes);
        assert!(scan.notes.iter().any(|n| n.contains("\"/tmp\"")), "{:?}", scan.notes);
        // No detail carries a secret.
        for f in &scan.findings {
            assert!(!f.detail.contains("IOSFODNN7") && !f.detail.contains("wJalr") && !f.detail.contains("b3Blbn"), "{f:?}");
        }
    }

    #[test]
    fn literals_in_binaries_and_source_do_not_fire() {
        let (_img, root) = tree(&[
            ("/usr/bin/ssh-keygen", b"\x7fELF\0\0-----BEGIN OPENSSH PRIVATE KEY-----\0-----END OPENSSH PRIVATE KEY-----\0"),
            ("/usr/lib/libcrypto.so.3", b"\0\"-----BEGIN RSA PRIVATE KEY-----\"\0-----BEGIN PRIVATE KEY-----\n\0\0\0"),
            ("/usr/share/doc/x.txt", b"-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----\n"),
            ("/usr/lib/python3/dist-packages/botocore/credentials.py", b"        aws_secret_access_key=None,\n    'aws_secret_access_key': self.secret_key,\nAWS_SECRET_ACCESS_KEY = 'AWS_SECRET_ACCESS_KEY'\n"),
            ("/usr/share/zoneinfo/tzdata.zi", b"Z ASIA/Tokyo\nAKIAIOSFODNN7EXAMPLEX\nxAKIAIOSFODNN7EXAMPLE\nAKIAiosfodnn7EXAMPLE\n"),
        ]);
        let scan = scan(&root, &Needles::default(), &[]).unwrap();
        assert_eq!(found(&scan), vec![]);
        assert_eq!(scan.files, 5);
    }

    #[test]
    fn needles_need_boundaries() {
        let (_img, root) = tree(&[
            ("/a", b"deadbeef52:54:00:ab:cd:ef\n52:54:00:ab:cd:ef:01\nid 152:54:00:ab:cd:ef\n"),
            ("/b", b"110.0.2.150\n10.0.2.150\n10.0.2.15.3\n110.0.2.15\nfd00::150\n"),
            ("/c", b"upstream-builder2\nupstream-builder.example.com\nxupstream-builder\nmy-upstream-builder\n"),
            ("/d", b"line\nvia=10.0.2.15/24 mac=52:54:00:AB:CD:EF host=upstream-builder\n"),
        ]);
        let scan = scan(&root, &needles(), &[]).unwrap();
        assert_eq!(
            found(&scan),
            vec![
                (FindingKind::Hostname, "/d", 2, "hostname upstream-builder"),
                (FindingKind::Mac, "/d", 2, "MAC 52:54:00:ab:cd:ef"),
                (FindingKind::Ip, "/d", 2, "IP 10.0.2.15"),
            ]
        );
    }

    #[test]
    fn symlinks_are_never_followed() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("id_rsa"), KEY).unwrap();
        let (img, root) = tree(&[("/etc/hostname", b"clean\n")]);
        symlink(host.path(), img.path().join("etc/hostdir")).unwrap();
        symlink(host.path().join("id_rsa"), img.path().join("etc/hostkey")).unwrap();
        symlink("/", img.path().join("etc/rootloop")).unwrap();
        symlink("..", img.path().join("etc/up")).unwrap();
        std::fs::create_dir(img.path().join("loop")).unwrap();
        symlink("../loop", img.path().join("loop/again")).unwrap();
        symlink("self", img.path().join("self")).unwrap();
        let scan = scan(&root, &needles(), &[]).unwrap();
        assert_eq!(found(&scan), vec![]);
        assert_eq!(scan.files, 1);
        assert_eq!(std::fs::read_to_string(host.path().join("id_rsa")).unwrap(), KEY);
    }

    /// A live link naming the build's directory (or the build host) is residue: its target is
    /// searched as text, never followed.
    #[test]
    fn symlink_targets_are_searched() {
        let (img, root) = tree(&[("/etc/hostname", b"clean\n")]);
        symlink("/var/tmp/imgforge-provision/app.conf", img.path().join("etc/app.conf")).unwrap();
        std::fs::create_dir_all(img.path().join("srv/a/b")).unwrap();
        symlink("../../upstream-builder/data", img.path().join("srv/a/b/data")).unwrap();
        symlink("/usr/share/zoneinfo/Etc/UTC", img.path().join("etc/localtime")).unwrap();
        let scan = scan(&root, &needles(), &[]).unwrap();
        assert_eq!(
            found(&scan),
            vec![
                (FindingKind::ProvisionerPath, "/etc/app.conf", 1, "provisioner path /var/tmp/imgforge-provision in the symlink's target"),
                (FindingKind::Hostname, "/srv/a/b/data", 1, "hostname upstream-builder in the symlink's target"),
            ]
        );
        assert_eq!(scan.files, 1);
    }

    #[test]
    fn open_file_refuses_symlinked_components() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("id_rsa"), KEY).unwrap();
        let (img, root) = tree(&[("/etc/x", b"")]);
        symlink(host.path(), img.path().join("etc/hostdir")).unwrap();
        symlink("x", img.path().join("etc/y")).unwrap();
        let top = root.dir(Path::new("/")).unwrap();
        assert!(walk::open_file(top.as_fd(), Path::new("/etc/hostdir/id_rsa")).unwrap().is_none());
        assert!(walk::open_file(top.as_fd(), Path::new("/etc/y")).unwrap().is_none());
        assert!(walk::open_file(top.as_fd(), Path::new("/etc/x")).unwrap().is_some());
    }

    #[test]
    fn skip_prefixes_honoured() {
        let (_img, root) = tree(&[
            ("/proc/1/environ", KEY.as_bytes()),
            ("/run/secrets/key", KEY.as_bytes()),
            ("/procfs-notes/key", KEY.as_bytes()),
            ("/var/run-copy", KEY.as_bytes()),
        ]);
        let scan = scan(&root, &Needles::default(), &["/proc", "/sys", "/dev", "/run/"]).unwrap();
        let paths: Vec<&str> = scan.findings.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["/procfs-notes/key", "/var/run-copy"]);
        assert!(scan.notes.iter().any(|n| n == "/proc: skipped as asked"), "{:?}", scan.notes);
    }

    #[test]
    fn chunks_keep_lines_and_straddling_matches() {
        let mut big = Vec::new();
        for i in 0..400 {
            big.extend_from_slice(format!("filler line {i:04} with some text to pad it out\n").as_bytes());
        }
        // Line 401, straddling several chunk boundaries below.
        big.extend_from_slice(KEY.as_bytes());
        for _ in 0..50 {
            big.extend_from_slice(b"x\n");
        }
        big.extend_from_slice(b"peer upstream-builder\n"); // line 401 + 4 + 50 = 455
        big.extend_from_slice(b"peer upstream-builder\n");
        let (_img, root) = tree(&[("/var/log/big.log", &big), ("/k", KEY.as_bytes())]);
        for chunk in [100, 1500, 4096, 5000, CHUNK] {
            let scan = scan_chunked(&root, &needles(), &[], chunk).unwrap();
            assert_eq!(
                found(&scan),
                vec![
                    (FindingKind::PrivateKey, "/k", 1, "-----BEGIN OPENSSH PRIVATE KEY-----"),
                    (FindingKind::PrivateKey, "/var/log/big.log", 401, "-----BEGIN OPENSSH PRIVATE KEY-----"),
                    (FindingKind::Hostname, "/var/log/big.log", 455, "hostname upstream-builder (2 times)"),
                ],
                "chunk {chunk}"
            );
            assert_eq!(scan.bytes, (big.len() + KEY.len()) as u64);
        }
    }

    #[test]
    fn secrets_of_a_file_are_its_values() {
        let creds =
            b"[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n";
        let got = secrets_in(creds, "/root/.aws/credentials");
        let values: Vec<(RemovedKind, &[u8])> = got.iter().map(|r| (r.kind, r.bytes.as_slice())).collect();
        assert_eq!(
            values,
            vec![
                (RemovedKind::AwsAccessKey, &b"AKIAIOSFODNN7EXAMPLE"[..]),
                (RemovedKind::AwsSecretKey, &b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"[..])
            ]
        );
        // The label and Debug never show the value.
        assert_eq!(got[1].label(), "AWS secret access key (redacted) removed from /root/.aws/credentials");
        assert!(!format!("{got:?}").contains("wJalr") && !format!("{got:?}").contains("IOSFODNN7"));
        // A key: its second body line (the first is the same in every OpenSSH key).
        let key = secrets_in(KEY.as_bytes(), "/etc/ssh/ssh_host_ed25519_key");
        assert_eq!(key.len(), 1);
        assert_eq!((key[0].kind, key[0].bytes.as_slice()), (RemovedKind::PrivateKey, KEY.lines().nth(2).unwrap().as_bytes()));
        // Code naming the variables holds no secret.
        assert!(secrets_in(b"aws_secret_access_key=None\nAWS_SECRET_ACCESS_KEY = 'AWS_SECRET_ACCESS_KEY'\n", "/x").is_empty());
    }

    #[test]
    fn live_needles_are_not_raw_needles() {
        let removed = |b: &[u8]| Removed { kind: RemovedKind::MachineId, bytes: b.to_vec(), from: "/etc/machine-id".into() };
        let n = Needles {
            hostnames: vec!["upstream-builder".into(), "old-name-1".into()],
            removed: vec![removed(b"b5e2a41ce535ae7857b8d37612f24e8e"), removed(b"0123456789abcdef0123456789abcdef")],
            ..Needles::default()
        };
        let (_img, root) =
            tree(&[("/etc/hosts", b"127.0.1.1 upstream-builder\n"), ("/etc/keep", b"id b5e2a41ce535ae7857b8d37612f24e8e\n")]);
        let scan = scan(&root, &n, &[]).unwrap();
        // The hostname is a finding; the machine id is not (only noted as live).
        assert_eq!(found(&scan), vec![(FindingKind::Hostname, "/etc/hosts", 1, "hostname upstream-builder")]);
        assert_eq!(scan.live.iter().copied().collect::<Vec<_>>(), [NeedleRef::Hostname(0), NeedleRef::Removed(0)]);
        let raw = n.without(&scan.live);
        assert_eq!(raw.hostnames, ["old-name-1"]);
        assert_eq!(raw.removed, [removed(b"0123456789abcdef0123456789abcdef")]);
    }

    #[test]
    fn kind_names_round_trip() {
        for k in FindingKind::ALL {
            assert_eq!(FindingKind::parse(k.name()), Some(k));
        }
        assert_eq!(FindingKind::parse("nope"), None);
        assert_eq!(FindingKind::ProvisionerPath.name(), "provisioner-path");
    }
}
