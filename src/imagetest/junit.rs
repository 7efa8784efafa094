//! The JUnit XML report of a test run: one `<testsuite>` per recipe suite, every case named
//! `IMAGE.SUITE` / `CHECK` (unique), the image's name, version, record and SHA-256 as properties.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Case, Subject};

/// The report as XML. Pure.
pub fn render(subject: &Subject, cases: &[Case]) -> anyhow::Result<String> {
    let mut report = Report::new(format!("imgforge test {} {}", subject.name, subject.version));
    let mut suites: Vec<&str> = Vec::new();
    for c in cases {
        if !suites.contains(&c.suite.as_str()) {
            suites.push(&c.suite);
        }
    }
    let mut total = 0.0;
    for suite in suites {
        let mut ts = TestSuite::new(suite);
        for (k, v) in [
            ("image.name", subject.name.as_str()),
            ("image.version", subject.version.as_str()),
            ("image.record", subject.record.as_deref().unwrap_or("")),
            ("image.sha256", subject.sha256.as_str()),
            ("stage", "offline"),
        ] {
            ts.add_property(Property::new(k, v));
        }
        let mut seconds = 0.0;
        for c in cases.iter().filter(|c| c.suite == suite) {
            let status = match &c.failure {
                None => TestCaseStatus::success(),
                Some(why) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message(why.as_str());
                    s
                }
            };
            let mut tc = TestCase::new(c.name.as_str(), status);
            tc.set_classname(format!("{}.{}", subject.name, suite));
            tc.set_time(Duration::from_secs_f64(c.seconds));
            seconds += c.seconds;
            ts.add_test_case(tc);
        }
        ts.set_time(Duration::from_secs_f64(seconds));
        total += seconds;
        report.add_test_suite(ts);
    }
    report.set_time(Duration::from_secs_f64(total));
    report.to_string().context("Failed to write the JUnit report")
}

/// Writes the report to `path` (atomically: a temporary file renamed over it).
pub fn write(path: &Path, subject: &Subject, cases: &[Case]) -> anyhow::Result<()> {
    let xml = render(subject, cases)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("Failed to create a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, xml.as_bytes()).with_context(|| format!("Failed to write {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cases_are_grouped_by_suite_and_failures_carry_their_message() {
        let subject = Subject { name: "web".into(), version: "1.0".into(), record: Some("01J".into()), sha256: "ab".into() };
        let case = |suite: &str, name: &str, failure: Option<&str>| Case {
            suite: suite.into(),
            name: name.into(),
            seconds: 0.5,
            failure: failure.map(str::to_string),
        };
        let xml = render(
            &subject,
            &[case("base", "file /a", None), case("base", "user x", Some("x is <missing>")), case("app", "file /a", None)],
        )
        .unwrap();
        assert!(xml.contains(r#"<testsuites name="imgforge test web 1.0" tests="3" skipped="0" failures="1""#), "{xml}");
        assert!(xml.contains(r#"<testsuite name="base" tests="2" skipped="0" errors="0" failures="1""#), "{xml}");
        assert!(xml.contains(r#"<property name="image.record" value="01J"/>"#), "{xml}");
        assert!(xml.contains(r#"<testcase name="user x" classname="web.base""#), "{xml}");
        assert!(xml.contains(r#"<failure message="x is &lt;missing&gt;""#), "{xml}");
        assert!(xml.contains(r#"<testcase name="file /a" classname="web.app""#), "{xml}");
    }
}
