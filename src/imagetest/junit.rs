//! JUnit XML: the report of a test run (one `<testsuite>` per recipe suite, every case named
//! `IMAGE.SUITE` / `CHECK` (unique), the image's name, version, record and SHA-256 and the
//! suite's stage as properties), and the reports of the tools a suite runs, read into cases.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use quick_junit::{NonSuccessKind, Property, Report, TestCase, TestCaseStatus, TestSuite};

use super::{Case, Subject};

/// The report as XML; `stage` names each suite's stage. Pure.
pub fn render(subject: &Subject, cases: &[Case], stage: &dyn Fn(&str) -> &'static str) -> anyhow::Result<String> {
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
            ("stage", stage(suite)),
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
pub fn write(path: &Path, subject: &Subject, cases: &[Case], stage: &dyn Fn(&str) -> &'static str) -> anyhow::Result<()> {
    let xml = render(subject, cases, stage)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("Failed to create {}", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("Failed to create a file in {}", dir.display()))?;
    std::io::Write::write_all(&mut tmp, xml.as_bytes()).with_context(|| format!("Failed to write {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(())
}

/// The cases of a JUnit report another tool wrote (pytest, rspec_junit_formatter), each named
/// `classname.name` after `clean` (which drops what differs every run, such as a temporary
/// host path). Pure.
pub fn read(suite: &str, xml: &str, clean: &dyn Fn(&str) -> String) -> anyhow::Result<Vec<Case>> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out: Vec<Case> = Vec::new();
    let mut open: Option<Case> = None;
    loop {
        match reader.read_event()? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"testcase" => {
                if let Some(c) = open.take() {
                    out.push(c);
                }
                let mut name = String::new();
                let mut class = String::new();
                let mut seconds = 0.0;
                for a in e.attributes() {
                    let a = a?;
                    let v = a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?.into_owned();
                    match a.key.as_ref() {
                        b"name" => name = v,
                        b"classname" => class = v,
                        b"time" => seconds = v.parse().unwrap_or(0.0),
                        _ => {}
                    }
                }
                let name = clean(&name);
                let full = if class.is_empty() { name } else { format!("{class}.{name}") };
                open = Some(Case { suite: suite.into(), name: full, seconds, failure: None });
            }
            Event::Start(e) | Event::Empty(e) if matches!(e.name().as_ref(), b"failure" | b"error") => {
                let mut msg = String::from("failed");
                for a in e.attributes() {
                    let a = a?;
                    if a.key.as_ref() == b"message" {
                        msg = a.normalized_value(quick_xml::XmlVersion::Implicit1_0)?.into_owned();
                    }
                }
                if let Some(c) = open.as_mut() {
                    c.failure = Some(msg);
                }
            }
            Event::End(e) if e.name().as_ref() == b"testcase" => {
                if let Some(c) = open.take() {
                    out.push(c);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(c) = open.take() {
        out.push(c);
    }
    Ok(out)
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
            &|s| if s == "app" { "boot" } else { "offline" },
        )
        .unwrap();
        assert!(xml.contains(r#"<testsuites name="imgforge test web 1.0" tests="3" skipped="0" failures="1""#), "{xml}");
        assert!(xml.contains(r#"<testsuite name="base" tests="2" skipped="0" errors="0" failures="1""#), "{xml}");
        assert!(xml.contains(r#"<property name="image.record" value="01J"/>"#), "{xml}");
        assert!(xml.contains(r#"<testcase name="user x" classname="web.base""#), "{xml}");
        assert!(xml.contains(r#"<failure message="x is &lt;missing&gt;""#), "{xml}");
        assert!(xml.contains(r#"<testcase name="file /a" classname="web.app""#), "{xml}");
        assert!(xml.contains(r#"<property name="stage" value="boot"/>"#), "{xml}");
    }

    #[test]
    fn pytest_report_becomes_cases_without_the_host_part() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="0" tests="2" time="0.3">
<testcase classname="test_image" name="test_ssh[chroot:///tmp/imgforge-mount-x]" time="0.100" />
<testcase classname="test_image" name="test_pkg[chroot:///tmp/imgforge-mount-x-nginx]" time="0.100" />
<testcase classname="test_image" name="test_tz[chroot:///tmp/imgforge-mount-x]" time="0.200"><failure message="AssertionError: assert &apos;X&apos; in &apos;Etc/UTC&apos;">long text</failure></testcase>
</testsuite></testsuites>"#;
        let clean = |n: &str| n.replace("chroot:///tmp/imgforge-mount-x", "").replace("[]", "").replace("[-", "[");
        let cases = read("infra", xml, &clean).unwrap();
        assert_eq!(cases.len(), 3);
        assert_eq!((cases[0].name.as_str(), cases[0].failure.as_deref()), ("test_image.test_ssh", None));
        assert_eq!(cases[1].name, "test_image.test_pkg[nginx]");
        assert_eq!(cases[2].name, "test_image.test_tz");
        assert_eq!(cases[2].failure.as_deref(), Some("AssertionError: assert 'X' in 'Etc/UTC'"));
        assert!((cases[2].seconds - 0.2).abs() < 1e-9);
    }

    #[test]
    fn rspec_report_reads_the_same_way() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuite name="rspec" tests="2" skipped="0" failures="1" errors="0" time="0.5" timestamp="2026-11-30T20:00:00+00:00" hostname="h">
<properties><property name="seed" value="1"/></properties>
<testcase classname="spec.base.image_spec" name="File &quot;/usr/sbin/policy-rc.d&quot; is expected not to be file" file="./spec/base/image_spec.rb" time="0.2"></testcase>
<testcase classname="spec.base.image_spec" name="File &quot;/etc/timezone&quot; content is expected to match /Etc\/UTC/" file="./spec/base/image_spec.rb" time="0.3"><failure message="expected &quot;X&quot; to match /Etc\/UTC/" type="RSpec::Expectations::ExpectationNotMetError">Failure/Error: …</failure></testcase>
</testsuite>"#;
        let cases = read("spec", xml, &|n| n.to_string()).unwrap();
        assert_eq!(cases.len(), 2);
        assert_eq!(cases[0].name, "spec.base.image_spec.File \"/usr/sbin/policy-rc.d\" is expected not to be file");
        assert_eq!(cases[1].failure.as_deref(), Some("expected \"X\" to match /Etc\\/UTC/"));
    }
}
