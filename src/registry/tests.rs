//! The conformance suite every backend passes.

use super::packages::Package;
use super::query::PackageReq;
use super::*;

fn rec(name: &str, version: &str, status: &str, parent: Option<&str>) -> Record {
    Record {
        id: record::new_id(),
        name: name.into(),
        version: version.into(),
        status: status.into(),
        parent: record::Parent { record: parent.map(str::to_string), digest: "sha256:00".into(), ..Default::default() },
        ..Record::default()
    }
}

fn pkg(name: &str, version: &str) -> Package {
    Package { name: name.into(), version: version.into(), arch: "amd64".into(), source: None }
}

/// Runs every check against a fresh store made by `make`.
pub fn conformance(make: &dyn Fn() -> Box<dyn Store>) {
    let mut s = make();
    let mut foundation = rec("foundation", "1.0.0", "released", None);
    foundation.kernels = vec!["6.1.0-18-amd64".into()];
    foundation.packages = vec![pkg("libc6", "2.36-9"), pkg("openssl", "3.0.11-1~deb12u2")];
    foundation.labels.insert("env".into(), "prod".into());
    s.register(&foundation).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut base = rec("base", "1.4.0", "tested", Some(&foundation.id));
    base.packages = vec![pkg("openssl", "3.0.15-1~deb12u1")];
    base.labels.insert("env".into(), "prod".into());
    s.register(&base).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let app = rec("app", "2.0.0", "candidate", Some(&base.id));
    s.register(&app).unwrap();

    // get: everything back, packages included.
    assert_eq!(s.get(&foundation.id).unwrap().unwrap(), foundation);
    assert!(s.get("01NOPE").unwrap().is_none());
    // A duplicate id is refused.
    assert!(s.register(&foundation).is_err());

    let ids = |q: &Query| search(&*s, q).unwrap().into_iter().map(|r| r.name).collect::<Vec<_>>();
    assert_eq!(ids(&Query::default()), ["app", "base", "foundation"], "newest first");
    assert_eq!(ids(&Query { name: Some("base".into()), ..Query::default() }), ["base"]);
    assert_eq!(ids(&Query { status: Some("tested".into()), ..Query::default() }), ["base"]);
    assert_eq!(ids(&Query { labels: vec![("env".into(), "prod".into())], ..Query::default() }), ["base", "foundation"]);
    assert_eq!(ids(&Query { kernel: Some("6.1.*".into()), ..Query::default() }), ["foundation"]);
    let vulnerable = Query { packages: vec![PackageReq::parse("openssl<3.0.15").unwrap()], ..Query::default() };
    assert_eq!(ids(&vulnerable), ["foundation"]);
    assert_eq!(ids(&Query { packages: vec![PackageReq::parse("openssl").unwrap()], ..Query::default() }), ["base", "foundation"]);
    assert_eq!(ids(&Query { descendant_of: Some(foundation.id.clone()), ..Query::default() }), ["app", "base"]);
    assert_eq!(ids(&Query { descendant_of: Some(base.id.clone()), ..Query::default() }), ["app"]);
    assert_eq!(ids(&Query { version: Some("1.x".into()), ..Query::default() }), ["base", "foundation"]);
    assert_eq!(resolve(&*s, "base@1.4.0").unwrap().unwrap().id, base.id);
    // AMI ids are added, region by region; the packages stay.
    let published = Published {
        amis: std::collections::BTreeMap::from([("eu-west-1".to_string(), "ami-0123".to_string())]),
        snapshots: std::collections::BTreeMap::from([("eu-west-1".to_string(), "snap-0123".to_string())]),
        ..Published::default()
    };
    assert!(s.add_published(&foundation.id, &published).unwrap());
    assert!(!s.add_published("01NOPE", &published).unwrap());
    let got = s.get(&foundation.id).unwrap().unwrap();
    assert_eq!((got.amis.get("eu-west-1").map(String::as_str), got.packages.len()), (Some("ami-0123"), 2));
    assert_eq!(got.snapshots.get("eu-west-1").map(String::as_str), Some("snap-0123"));
    assert_eq!(resolve(&*s, "app").unwrap().unwrap().id, app.id);
    assert!(resolve(&*s, "nothing").unwrap().is_none());
    channels_and_revocation(&mut *s, &foundation, &base);
    leases(&mut *s);
}

/// One holder per layer key: a live holder keeps it, a second asker is told who holds it, only
/// the holder renews or releases it, a silent holder loses it and the takeover is logged.
fn leases(s: &mut dyn Store) {
    use lease::Acquire;
    // Period 0: silent after a second (real periods are 1 s and more).
    let a = lease::Lease { period: 0, ..lease::mine("sha256:k1", "base", 1) };
    let b = lease::mine("sha256:k1", "base", 60);
    assert_eq!(s.lease_acquire(&a).unwrap(), Acquire::Acquired);
    assert_eq!(s.lease_acquire(&a).unwrap(), Acquire::Acquired, "asking again is harmless");
    assert!(s.lease_heartbeat("sha256:k1", &a.holder).unwrap());
    let other = lease::mine("sha256:k2", "app", 60);
    assert_eq!(s.lease_acquire(&other).unwrap(), Acquire::Acquired, "another key is free");
    let held = s.leases().unwrap();
    assert_eq!(held.iter().map(|(l, _)| l.layer_key.as_str()).collect::<Vec<_>>(), ["sha256:k1", "sha256:k2"]);
    match s.lease_acquire(&lease::mine("sha256:k2", "app", 60)).unwrap() {
        Acquire::Held { lease, age } => assert_eq!((lease, age < 5), (other.clone(), true)),
        x => panic!("{x:?}"),
    }
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert!(!s.lease_heartbeat("sha256:k1", &b.holder).unwrap(), "only the holder renews");
    match s.lease_acquire(&b).unwrap() {
        Acquire::TakenOver { previous, silent } => assert_eq!((previous, silent >= 1), (a.clone(), true)),
        x => panic!("{x:?}"),
    }
    assert!(!s.lease_heartbeat("sha256:k1", &a.holder).unwrap(), "the silent holder lost it");
    let log = s.lease_takeovers().unwrap();
    assert_eq!((log.len(), &log[0].previous.holder, &log[0].by.holder), (1, &a.holder, &b.holder));
    s.lease_release("sha256:k1", &a.holder).unwrap();
    assert_eq!(s.leases().unwrap().len(), 2, "a former holder cannot release it");
    s.lease_release("sha256:k1", &b.holder).unwrap();
    s.lease_release("sha256:k2", &other.holder).unwrap();
    assert!(s.leases().unwrap().is_empty());
}

/// Promotion needs a passing verdict for the record's raw; the channel keeps its history;
/// rollback points back; a channel query finds the pointed record; revocation cascades.
fn channels_and_revocation(s: &mut dyn Store, foundation: &Record, base: &Record) {
    let raw =
        |sha: &str| record::Output { format: "raw".into(), path: "/nowhere.raw".into(), size: 1, sha256: sha.into(), ..Default::default() };
    let mut v1 = rec("web", "1.0.0", "candidate", Some(&base.id));
    v1.outputs = vec![raw("aa")];
    s.register(&v1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(2));
    let mut v2 = rec("web", "1.1.0", "candidate", Some(&base.id));
    v2.outputs = vec![raw("bb")];
    s.register(&v2).unwrap();
    // Untested: refused; forced without a reason: refused; a verdict on another sha: refused.
    let e = channel::promote(s, &v1, "prod", false, None).unwrap_err().to_string();
    assert!(e.contains("it was never tested"), "{e}");
    assert!(channel::promote(s, &v1, "prod", true, None).unwrap_err().to_string().contains("--reason"));
    let verdict = |sha: &str, failed: Vec<String>| record::TestRun {
        date: "2026-11-30T00:00:00Z".into(),
        sha256: sha.into(),
        stage: "offline".into(),
        passed: 3,
        failed,
        junit: None,
    };
    s.update(&v1.id, &mut |r| r.tests.push(verdict("zz", vec![]))).unwrap();
    let v1 = s.get(&v1.id).unwrap().unwrap();
    assert!(channel::promote(s, &v1, "prod", false, None).unwrap_err().to_string().contains("SHA-256 differs"));
    s.update(&v1.id, &mut |r| {
        r.tests.push(verdict("aa", vec![]));
        r.status = "tested".into();
    })
    .unwrap();
    let v1 = s.get(&v1.id).unwrap().unwrap();
    let e1 = channel::promote(s, &v1, "prod", false, None).unwrap();
    assert_eq!((e1.record.as_str(), e1.forced), (v1.id.as_str(), false));
    assert_eq!(s.get(&v1.id).unwrap().unwrap().status, "released");
    // v2 failed its tests: only forced, with the reason kept.
    s.update(&v2.id, &mut |r| r.tests.push(verdict("bb", vec!["checks.file /x".into()]))).unwrap();
    let v2 = s.get(&v2.id).unwrap().unwrap();
    assert!(channel::promote(s, &v2, "prod", false, None).unwrap_err().to_string().contains("failed: checks.file /x"));
    let e2 = channel::promote(s, &v2, "prod", true, Some("hotfix INC-42")).unwrap();
    assert!(e2.forced);
    let q = Query { name: Some("web".into()), channel: Some("prod".into()), ..Query::default() };
    assert_eq!(search(&*s, &q).unwrap().iter().map(|r| r.id.clone()).collect::<Vec<_>>(), vec![v2.id.clone()]);
    let log = s.channel_log("web", Some("prod")).unwrap();
    assert_eq!(log, [e1.clone(), e2.clone()]);
    assert!(s.channel_log("web", Some("staging")).unwrap().is_empty());
    // Rollback: back to v1, as a new entry.
    let (back, from) = channel::rollback(s, "web", "prod", Some("v2 broke logins")).unwrap();
    assert_eq!((back.record.as_str(), from.as_str(), back.action.as_str()), (v1.id.as_str(), v2.id.as_str(), "rollback"));
    assert_eq!(channel::current(&*s, "web", "prod").unwrap().unwrap().record, v1.id);
    assert_eq!(s.channel_log("web", None).unwrap().len(), 3);
    // Revoking base with --cascade revokes web 1.0.0 and 1.1.0 too, not foundation.
    let done = channel::revoke(s, base, true, "CVE-2026-0001").unwrap();
    let mut ids: Vec<String> = done.iter().map(|r| r.id.clone()).collect();
    ids.sort();
    let mut want = vec![base.id.clone(), v1.id.clone(), v2.id.clone()];
    want.extend(
        search(&*s, &Query { descendant_of: Some(base.id.clone()), name: Some("app".into()), ..Query::default() })
            .unwrap()
            .into_iter()
            .map(|r| r.id),
    );
    want.sort();
    assert_eq!(ids, want);
    let got = s.get(&v1.id).unwrap().unwrap();
    assert_eq!((got.status.as_str(), got.revoked.as_ref().unwrap().by.as_str()), ("revoked", base.id.as_str()));
    assert_eq!(s.get(&foundation.id).unwrap().unwrap().status, "released");
    assert!(channel::promote(s, &got, "prod", true, Some("x")).unwrap_err().to_string().contains("is revoked (CVE-2026-0001"));
    assert!(channel::rollback(s, "web", "prod", None).unwrap_err().to_string().contains("no earlier (unrevoked) record"));
}

#[test]
fn sqlite_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance(&|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(sqlite::Sqlite::open(&dir.path().join(format!("r{i}.db"))).unwrap())
    });
}

/// Two writer processes (this test binary again, running `writer_process`), opened at once so
/// that their migrations race too, register 100 records each: all 200 are there.
fn concurrent_writers_lose_nothing(spec: &str) {
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..2)
        .map(|t| {
            std::process::Command::new(&exe)
                .args(["registry::tests::writer_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
                .env("IMGFORGE_TEST_REGISTRY", spec)
                .env("IMGFORGE_TEST_WRITER", t.to_string())
                .output_in_background()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "{}", String::from_utf8_lossy(&out.stdout));
    }
    let s = open(Some(spec)).unwrap();
    assert_eq!(s.find(&Query::default()).unwrap().len(), 200);
    assert_eq!(s.find(&Query { name: Some("img1".into()), ..Query::default() }).unwrap().len(), 100);
}

trait Background {
    fn output_in_background(&mut self) -> std::process::Child;
}

impl Background for std::process::Command {
    fn output_in_background(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
    }
}

/// One writer of `concurrent_writers_lose_nothing`, in a process of its own (ignored: it runs
/// only when that test starts it, with the registry and its number in the environment).
#[test]
#[ignore = "a child process of concurrent_writers_lose_nothing"]
fn writer_process() {
    let spec = std::env::var("IMGFORGE_TEST_REGISTRY").unwrap();
    let t = std::env::var("IMGFORGE_TEST_WRITER").unwrap();
    let mut s = open(Some(&spec)).unwrap();
    for i in 0..100 {
        let mut r = rec(&format!("img{t}"), &format!("1.{i}"), "candidate", None);
        r.packages = vec![pkg("openssl", "3.0.11-1")];
        s.register(&r).unwrap();
    }
}

#[test]
fn sqlite_concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_writers_lose_nothing(&format!("sqlite:{}", dir.path().join("registry.db").display()));
}

/// The same suite against a real PostgreSQL server, and its concurrent writers.
#[test]
fn postgres_conformance_and_concurrent_writers() {
    let Some(server) = pgserver::PgServer::start("postgres_conformance_and_concurrent_writers") else { return };
    let n = std::sync::atomic::AtomicUsize::new(0);
    conformance(&|| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::new(postgres::Postgres::open(&server.database(&format!("conf{i}"))).unwrap())
    });
    let url = server.database("writers");
    concurrent_writers_lose_nothing(&url);
    // A password never shows in a message.
    let bad = url.replace("imgforge@127.0.0.1", "imgforge:s3cret-pw@127.0.0.1").replace("/writers", "/nosuchdb");
    let Err(e) = open(Some(&bad)) else { panic!("opened {bad}") };
    let err = format!("{e:#}");
    assert!(err.contains("imgforge:***@127.0.0.1") && !err.contains("s3cret-pw"), "{err}");
}
