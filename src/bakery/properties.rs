//! The Java-properties artifact CI tools read (Jenkins `readProperties`, EnvInject, a
//! downstream job's parameters): `IMAGE_NAME`, `IMAGE_VERSION`, `RECORD_ID`, `LAYER_KEY`,
//! `MANIFEST`, `RAW`, `AMI_ID_<REGION>`; for many images each key is prefixed with the image's
//! name in capitals (`APP_WEB_1_IMAGE_VERSION`).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::Context;

use crate::registry::record::Record;

/// `NAME` as a key part: capitals, digits and `_`. Pure.
pub fn key_part(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect()
}

/// The properties of one record, each key after `prefix`. Pure.
pub fn of_record(prefix: &str, r: &Record) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert(format!("{prefix}IMAGE_NAME"), r.name.clone());
    m.insert(format!("{prefix}IMAGE_VERSION"), r.version.clone());
    m.insert(format!("{prefix}RECORD_ID"), r.id.clone());
    m.insert(format!("{prefix}IMAGE_STATUS"), r.status.clone());
    if let Some(k) = &r.layer_key {
        m.insert(format!("{prefix}LAYER_KEY"), k.clone());
    }
    if !r.manifest.is_empty() {
        m.insert(format!("{prefix}MANIFEST"), r.manifest.clone());
    }
    if let Some(raw) = r.outputs.iter().find(|o| o.format == "raw") {
        m.insert(format!("{prefix}RAW"), raw.path.clone());
    }
    for (region, ami) in &r.amis {
        m.insert(format!("{prefix}AMI_ID_{}", key_part(region)), ami.clone());
    }
    m
}

/// Properties text: one `key=value` line each, escaped as java.util.Properties reads them.
/// Pure.
pub fn render(props: &BTreeMap<String, String>) -> String {
    let mut out = String::from("# written by imgforge\n");
    for (k, v) in props {
        out.push_str(&escape(k, true));
        out.push('=');
        out.push_str(&escape(v, false));
        out.push('\n');
    }
    out
}

fn escape(s: &str, key: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '=' | ':' if key => {
                out.push('\\');
                out.push(c);
            }
            ' ' if key || i == 0 => out.push_str("\\ "),
            '#' | '!' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c if !c.is_ascii() || c.is_ascii_control() => out.push_str(&format!("\\u{:04x}", u32::from(c) & 0xffff)),
            c => out.push(c),
        }
    }
    out
}

/// Writes `props` to `path` (whole or not at all: a temporary file renamed over it).
pub fn write(path: &Path, props: &BTreeMap<String, String>) -> anyhow::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).with_context(|| format!("Failed to write {}", path.display()))?;
    tmp.write_all(render(props).as_bytes()).with_context(|| format!("Failed to write {}", path.display()))?;
    tmp.persist(path).with_context(|| format!("Failed to write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_read_back_as_java_reads_them() {
        let r = Record {
            id: "01J".into(),
            name: "app-web-1".into(),
            version: "1.0.0".into(),
            amis: BTreeMap::from([("eu-west-1".to_string(), "ami-1".to_string())]),
            ..Record::default()
        };
        let p = of_record(&format!("{}_", key_part(&r.name)), &r);
        assert_eq!(p["APP_WEB_1_IMAGE_VERSION"], "1.0.0");
        assert_eq!(p["APP_WEB_1_AMI_ID_EU_WEST_1"], "ami-1");
        let text = render(&BTreeMap::from([("A".to_string(), "x=y: #1 é\nz".to_string()), ("B".to_string(), "#lead".to_string())]));
        assert_eq!(text, "# written by imgforge\nA=x=y: #1 \\u00e9\\nz\nB=\\#lead\n");
    }
}
