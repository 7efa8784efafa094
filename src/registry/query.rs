//! Queries over records: name, version (exact or `1.x`), status, labels, kernel glob, package
//! constraints (`openssl<3.0.15`, Debian ordering), descendants.

use std::cmp::Ordering;

use anyhow::bail;

use super::debversion;
use super::record::Record;

/// A package constraint: a name and, optionally, an operator and a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageReq {
    /// Package name.
    pub name: String,
    /// Operator and version, if any.
    pub constraint: Option<(Op, String)>,
}

/// A version comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `=`
    Eq,
    /// `>=`
    Ge,
    /// `>`
    Gt,
}

impl std::fmt::Display for PackageReq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.constraint {
            None => write!(f, "{}", self.name),
            Some((op, v)) => {
                let op = match op {
                    Op::Lt => "<",
                    Op::Le => "<=",
                    Op::Eq => "=",
                    Op::Ge => ">=",
                    Op::Gt => ">",
                };
                write!(f, "{}{op}{v}", self.name)
            }
        }
    }
}

impl PackageReq {
    /// `openssl`, `openssl<3.0.15`, `openssh-server>=1:9`. Pure.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let at = s.find(['<', '>', '=']);
        let Some(at) = at else {
            return Ok(Self { name: s.trim().to_string(), constraint: None });
        };
        let (name, rest) = s.split_at(at);
        let (op, version) = [("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt), ("==", Op::Eq), ("=", Op::Eq)]
            .iter()
            .find_map(|(t, op)| rest.strip_prefix(t).map(|v| (*op, v.trim())))
            .ok_or_else(|| anyhow::anyhow!("bad package constraint {s:?}"))?;
        if name.trim().is_empty() || version.is_empty() {
            bail!("bad package constraint {s:?}: write NAME, or NAME<VERSION (also <=, =, >=, >)");
        }
        Ok(Self { name: name.trim().to_string(), constraint: Some((op, version.to_string())) })
    }

    /// Whether `version` satisfies the constraint. Pure.
    pub fn accepts(&self, version: &str) -> bool {
        let Some((op, want)) = &self.constraint else { return true };
        let o = debversion::compare(version, want);
        match op {
            Op::Lt => o == Ordering::Less,
            Op::Le => o != Ordering::Greater,
            Op::Eq => o == Ordering::Equal,
            Op::Ge => o != Ordering::Less,
            Op::Gt => o == Ordering::Greater,
        }
    }
}

/// What to look for; every given filter must hold.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Exact name.
    pub name: Option<String>,
    /// Exact version, or a pattern whose `x`/`*` components match anything (`1.x`, `2.*.3`).
    pub version: Option<String>,
    /// Status.
    pub status: Option<String>,
    /// Labels that must be present with these values.
    pub labels: Vec<(String, String)>,
    /// A glob (`*`, `?`) one of the image's kernels must match.
    pub kernel: Option<String>,
    /// Packages that must be installed (each constraint satisfied).
    pub packages: Vec<PackageReq>,
    /// Only records whose ancestry (parent chain) includes this record id.
    pub descendant_of: Option<String>,
    /// Only the record this channel of the image (`name`) points at.
    pub channel: Option<String>,
}

impl Query {
    /// Whether `r` matches, apart from `descendant_of` (which needs the other records). Pure.
    pub fn matches(&self, r: &Record) -> bool {
        self.name.as_ref().is_none_or(|n| *n == r.name)
            && self.version.as_ref().is_none_or(|v| version_matches(v, &r.version))
            && self.status.as_ref().is_none_or(|s| *s == r.status)
            && self.labels.iter().all(|(k, v)| r.labels.get(k) == Some(v))
            && self.kernel.as_ref().is_none_or(|g| r.kernels.iter().any(|k| glob(g, k)))
            && self.packages.iter().all(|p| r.packages.iter().any(|have| have.name == p.name && p.accepts(&have.version)))
    }
}

impl Query {
    /// A query from URL parameters (`name`, `version`, `status`, `kernel`, `descendant_of`,
    /// `label.KEY=VALUE` and `package` repeatable) and whether `latest` was asked (`latest=1`).
    /// Unknown parameters are errors. Pure.
    pub fn from_params(params: &[(String, String)]) -> Result<(Self, bool), String> {
        let mut q = Self::default();
        let mut latest = false;
        for (k, v) in params {
            match k.as_str() {
                "name" => q.name = Some(v.clone()),
                "version" => q.version = Some(v.clone()),
                "status" if super::record::STATUSES.contains(&v.as_str()) => q.status = Some(v.clone()),
                "status" => return Err(format!("status={v}: one of {}", super::record::STATUSES.join(", "))),
                "kernel" => q.kernel = Some(v.clone()),
                "descendant_of" => q.descendant_of = Some(v.clone()),
                "package" => q.packages.push(PackageReq::parse(v).map_err(|e| format!("package={v}: {e}"))?),
                "latest" => latest = matches!(v.as_str(), "1" | "true" | "yes"),
                _ => match k.strip_prefix("label.") {
                    Some(key) if !key.is_empty() => q.labels.push((key.to_string(), v.clone())),
                    _ => {
                        return Err(format!(
                            "unknown parameter {k:?}: use name, version, status, kernel, package, descendant_of, label.KEY, latest"
                        ));
                    }
                },
            }
        }
        Ok((q, latest))
    }

    /// Why `r` does not match (empty when it does, apart from `descendant_of`), one reason per
    /// failed filter, for people. Pure.
    pub fn why_not(&self, r: &Record) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(n) = self.name.as_ref().filter(|n| **n != r.name) {
            out.push(format!("name {} is not {n}", r.name));
        }
        if let Some(v) = self.version.as_ref().filter(|v| !version_matches(v, &r.version)) {
            out.push(format!("version {} does not match {v}", r.version));
        }
        if let Some(s) = self.status.as_ref().filter(|s| **s != r.status) {
            out.push(format!("status is {}, not {s}", r.status));
        }
        for (k, v) in &self.labels {
            match r.labels.get(k) {
                Some(have) if have == v => {}
                Some(have) => out.push(format!("label {k} is {have}, not {v}")),
                None => out.push(format!("no label {k}")),
            }
        }
        if let Some(g) = self.kernel.as_ref().filter(|g| !r.kernels.iter().any(|k| glob(g, k))) {
            out.push(format!(
                "no kernel matches {g} (has {})",
                if r.kernels.is_empty() { "none".to_string() } else { r.kernels.join(", ") }
            ));
        }
        for p in &self.packages {
            match r.packages.iter().find(|have| have.name == p.name) {
                None => out.push(format!("package {} is not installed", p.name)),
                Some(have) if !p.accepts(&have.version) => out.push(format!("package {} is {}", p.name, have.version)),
                Some(_) => {}
            }
        }
        out
    }
}

/// `1.x` matches 1.0 and 1.4.2; `1.2` matches only 1.2. Pure.
pub fn version_matches(pattern: &str, version: &str) -> bool {
    if !pattern.split('.').any(|c| c == "x" || c == "*") {
        return pattern == version;
    }
    let (p, v): (Vec<&str>, Vec<&str>) = (pattern.split('.').collect(), version.split('.').collect());
    let wild_tail = p.last().is_some_and(|c| *c == "x" || *c == "*");
    if v.len() < p.len() || (!wild_tail && v.len() != p.len()) {
        return false;
    }
    p.iter().zip(&v).all(|(pc, vc)| *pc == "x" || *pc == "*" || pc == vc)
}

/// Shell-style glob with `*` and `?`. Pure.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::packages::Package;

    #[test]
    fn package_constraints() {
        let r = PackageReq::parse("openssl<3.0.15").unwrap();
        assert_eq!(r.name, "openssl");
        assert!(r.accepts("3.0.11-1~deb12u2") && !r.accepts("3.0.15-1~deb12u1") && !r.accepts("3.1"));
        assert!(PackageReq::parse("openssh-server>=1:9").unwrap().accepts("1:9.2p1-2"));
        assert!(!PackageReq::parse("openssh-server>=1:9").unwrap().accepts("8.9"));
        assert!(PackageReq::parse("curl").unwrap().accepts("anything"));
        assert!(PackageReq::parse("<1").is_err() && PackageReq::parse("x<").is_err());
    }

    #[test]
    fn url_parameters() {
        let p = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
        let (q, latest) = Query::from_params(&p(&[
            ("name", "app"),
            ("status", "tested"),
            ("label.env", "prod"),
            ("package", "openssl<3"),
            ("latest", "1"),
        ]))
        .unwrap();
        assert!(latest);
        assert_eq!((q.name.as_deref(), q.status.as_deref()), (Some("app"), Some("tested")));
        assert_eq!(q.labels, [("env".to_string(), "prod".to_string())]);
        assert_eq!(q.packages[0].name, "openssl");
        assert!(Query::from_params(&p(&[("colour", "red")])).is_err());
        assert!(Query::from_params(&p(&[("status", "great")])).is_err());
    }

    #[test]
    fn versions_and_globs() {
        assert!(version_matches("1.x", "1.4.2") && version_matches("1.x", "1.0") && !version_matches("1.x", "2.0"));
        assert!(version_matches("1.2", "1.2") && !version_matches("1.2", "1.2.1"));
        assert!(version_matches("1.x.3", "1.9.3") && !version_matches("1.x.3", "1.9.3.1"));
        assert!(glob("6.1.*-amd64", "6.1.0-18-amd64") && !glob("6.1.*", "6.10.0") && glob("*", "") && glob("a?c", "abc"));
    }

    #[test]
    fn every_filter_applies() {
        let mut r = Record { name: "base".into(), version: "1.4.0".into(), status: "tested".into(), ..Record::default() };
        r.labels.insert("env".into(), "prod".into());
        r.kernels = vec!["6.1.0-18-amd64".into()];
        r.packages = vec![Package { name: "openssl".into(), version: "3.0.11-1".into(), arch: "amd64".into(), source: None }];
        let q = Query {
            name: Some("base".into()),
            version: Some("1.x".into()),
            status: Some("tested".into()),
            labels: vec![("env".into(), "prod".into())],
            kernel: Some("6.1.*".into()),
            packages: vec![PackageReq::parse("openssl<3.0.15").unwrap()],
            descendant_of: None,
            channel: None,
        };
        assert!(q.matches(&r));
        for bad in [
            Query { name: Some("app".into()), ..q.clone() },
            Query { version: Some("2.x".into()), ..q.clone() },
            Query { status: Some("released".into()), ..q.clone() },
            Query { labels: vec![("env".into(), "dev".into())], ..q.clone() },
            Query { kernel: Some("5.*".into()), ..q.clone() },
            Query { packages: vec![PackageReq::parse("openssl>=3.0.15").unwrap()], ..q.clone() },
        ] {
            assert!(!bad.matches(&r), "{bad:?}");
            assert_eq!(bad.why_not(&r).len(), 1, "{bad:?}: {:?}", bad.why_not(&r));
        }
        assert!(q.why_not(&r).is_empty());
        let why = Query { status: Some("released".into()), labels: vec![("app".into(), "x".into())], ..q.clone() }.why_not(&r);
        assert_eq!(why, ["status is tested, not released", "no label app"]);
    }
}
