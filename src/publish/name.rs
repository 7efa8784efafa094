//! AMI names: the `{name}-{version}-{timestamp}` template and EC2's rules for the result. Pure.

/// Values the template may use.
#[derive(Debug, Clone, Default)]
pub struct NameVars {
    /// Image name (`[image] name`, or the raw's file stem).
    pub name: String,
    /// Version, when known.
    pub version: Option<String>,
    /// Build time (or the raw's mtime), seconds since the epoch: stable across re-runs, so a
    /// re-run finds the AMI it registered before.
    pub epoch: u64,
    /// Git commit of the recipe, when known.
    pub commit: Option<String>,
    /// EC2 architecture name (x86_64, arm64).
    pub arch: String,
}

/// Placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["name", "version", "timestamp", "date", "commit", "arch"];

/// The default template.
pub fn default_template(vars: &NameVars) -> &'static str {
    if vars.version.is_some() { "{name}-{version}-{timestamp}" } else { "{name}-{timestamp}" }
}

/// Fills `template`; an unknown placeholder, a missing value or a bad result is an error.
pub fn render(template: &str, vars: &NameVars) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find('}').ok_or_else(|| format!("name template `{template}`: `{{` without a closing `}}`"))?;
        let key = &after[..close];
        out.push_str(&value(key, vars, template)?);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(format!("name template `{template}`: `}}` without an opening `{{`"));
    }
    out.push_str(rest);
    check_ami_name(&out)?;
    Ok(out)
}

fn value(key: &str, vars: &NameVars, template: &str) -> Result<String, String> {
    let when = crate::stamp::rfc3339(vars.epoch);
    Ok(match key {
        "name" => vars.name.clone(),
        "version" => vars.version.clone().ok_or_else(|| {
            format!("name template `{template}` uses {{version}} but the image has no version (publish a build manifest)")
        })?,
        "timestamp" => when.chars().filter(char::is_ascii_digit).collect(),
        "date" => when.chars().take(10).collect(),
        "commit" => vars
            .commit
            .as_deref()
            .map(|c| c.chars().take(12).collect())
            .ok_or_else(|| format!("name template `{template}` uses {{commit}} but the image has no git commit"))?,
        "arch" => vars.arch.clone(),
        other => return Err(format!("name template `{template}`: unknown placeholder {{{other}}} (use {})", PLACEHOLDERS.join(", "))),
    })
}

/// EC2's rule: 3–128 characters of letters, digits, `( ) [ ]`, space, `. / - ' @ _`.
pub fn check_ami_name(name: &str) -> Result<(), String> {
    let len = name.chars().count();
    if !(3..=128).contains(&len) {
        return Err(format!("AMI name `{name}` has {len} characters; EC2 allows 3 to 128"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "()[] ./-'@_".contains(*c))) {
        return Err(format!("AMI name `{name}` contains `{c}`; EC2 allows letters, digits, spaces and ( ) [ ] . / - ' @ _"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> NameVars {
        NameVars { name: "base".into(), version: Some("1.2.0".into()), epoch: 1_700_000_000, commit: None, arch: "x86_64".into() }
    }

    #[test]
    fn renders_defaults() {
        let v = vars();
        assert_eq!(render(default_template(&v), &v).unwrap(), "base-1.2.0-20231114221320");
        assert_eq!(render("{name} {date} ({arch})", &v).unwrap(), "base 2023-11-14 (x86_64)");
    }

    #[test]
    fn rejects_bad_templates_and_names() {
        let v = vars();
        assert!(render("{nme}", &v).unwrap_err().contains("unknown placeholder {nme}"));
        assert!(render("{name", &v).is_err());
        assert!(render("name}", &v).is_err());
        assert!(render("{commit}", &v).unwrap_err().contains("no git commit"));
        assert!(render("ab", &v).unwrap_err().contains("3 to 128"));
        assert!(render(&"a".repeat(129), &v).is_err());
        assert!(render("base:1", &v).unwrap_err().contains("`:`"));
        assert!(check_ami_name("ok (x) [y] a.b/c-d'e@f_g").is_ok());
    }
}
