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
        parent: record::Parent { record: parent.map(str::to_string), url: None, digest: "sha256:00".into() },
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
    let amis = std::collections::BTreeMap::from([("eu-west-1".to_string(), "ami-0123".to_string())]);
    assert!(s.add_amis(&foundation.id, &amis).unwrap());
    assert!(!s.add_amis("01NOPE", &amis).unwrap());
    let got = s.get(&foundation.id).unwrap().unwrap();
    assert_eq!((got.amis.get("eu-west-1").map(String::as_str), got.packages.len()), (Some("ami-0123"), 2));
    assert_eq!(resolve(&*s, "app").unwrap().unwrap().id, app.id);
    assert!(resolve(&*s, "nothing").unwrap().is_none());
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

#[test]
fn sqlite_concurrent_writers_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("registry.db");
    std::thread::scope(|sc| {
        for t in 0..2 {
            let path = &path;
            sc.spawn(move || {
                let mut s = sqlite::Sqlite::open(path).unwrap();
                for i in 0..100 {
                    let mut r = rec(&format!("img{t}"), &format!("1.{i}"), "candidate", None);
                    r.packages = vec![pkg("openssl", "3.0.11-1")];
                    s.register(&r).unwrap();
                }
            });
        }
    });
    let s = sqlite::Sqlite::open(&path).unwrap();
    assert_eq!(s.find(&Query::default()).unwrap().len(), 200);
    assert_eq!(s.find(&Query { name: Some("img1".into()), ..Query::default() }).unwrap().len(), 100);
}
