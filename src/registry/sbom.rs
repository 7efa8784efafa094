//! SBOMs from a record's package list: CycloneDX 1.5 and SPDX 2.3, both JSON. Deterministic: the
//! same record gives the same bytes (identifiers derive from the record id, times from its
//! build date).

use serde_json::{Value, json};

use super::packages::Package;
use super::record::Record;

/// The SBOM formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// CycloneDX 1.5 JSON.
    Cyclonedx,
    /// SPDX 2.3 JSON.
    Spdx,
}

/// The document for `r` (with all its packages). Pure.
pub fn document(r: &Record, format: Format) -> Value {
    match format {
        Format::Cyclonedx => cyclonedx(r),
        Format::Spdx => spdx(r),
    }
}

/// A package URL (purl-spec `deb` type): `pkg:deb/debian/libssl3@3.0.11-1?arch=amd64`.
/// Pure.
pub fn purl(p: &Package, distribution: Option<&str>) -> String {
    let vendor = distribution.unwrap_or("debian");
    let mut s = format!("pkg:deb/{}/{}@{}?arch={}", enc(vendor), enc(&p.name), enc(&p.version), enc(&p.arch));
    if let Some(src) = &p.source {
        s.push_str(&format!("&upstream={}", enc(src)));
    }
    s
}

/// Percent-encodes what a purl component may not hold (`:` of an epoch, `+`). Pure.
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The record id (a ULID, 128 bits) as a UUID. Pure.
fn uuid_of(r: &Record) -> String {
    let bits = ulid::Ulid::from_string(&r.id).map(u128::from).unwrap_or(0);
    uuid::Uuid::from_u128(bits).to_string()
}

fn cyclonedx(r: &Record) -> Value {
    let dist = r.distribution.as_deref();
    let components: Vec<Value> = r
        .packages
        .iter()
        .map(|p| {
            let purl = purl(p, dist);
            let mut c = json!({ "type": "library", "bom-ref": purl, "name": p.name, "version": p.version, "purl": purl });
            if let Some(src) = &p.source {
                c["properties"] = json!([{ "name": "imgforge:source-package", "value": src }]);
            }
            c
        })
        .collect();
    let mut properties = vec![json!({ "name": "imgforge:record", "value": r.id })];
    if let Some(d) = dist {
        properties.push(json!({ "name": "imgforge:distribution", "value": d }));
    }
    properties.extend(r.kernels.iter().map(|k| json!({ "name": "imgforge:kernel", "value": k })));
    let image = json!({
        "type": "operating-system",
        "bom-ref": format!("imgforge:{}", r.id),
        "name": r.name,
        "version": r.version,
        "properties": properties,
    });
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": format!("urn:uuid:{}", uuid_of(r)),
        "version": 1,
        "metadata": {
            "timestamp": r.build_date,
            "tools": { "components": [{ "type": "application", "name": "imgforge", "version": env!("CARGO_PKG_VERSION") }] },
            "component": image,
        },
        "components": components,
        "dependencies": [{
            "ref": format!("imgforge:{}", r.id),
            "dependsOn": r.packages.iter().map(|p| purl(p, dist)).collect::<Vec<_>>(),
        }],
    })
}

/// SPDX ids allow letters, digits, `.` and `-`. Pure.
fn spdx_id(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
}

fn spdx(r: &Record) -> Value {
    let dist = r.distribution.as_deref();
    let image_id = "SPDXRef-Image".to_string();
    let mut packages = vec![json!({
        "name": r.name,
        "SPDXID": image_id,
        "versionInfo": r.version,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "comment": format!("imgforge record {}", r.id),
    })];
    let mut relationships =
        vec![json!({ "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": image_id })];
    for (i, p) in r.packages.iter().enumerate() {
        let id = format!("SPDXRef-Package-{}-{i}", spdx_id(&p.name));
        let mut pkg = json!({
            "name": p.name,
            "SPDXID": id,
            "versionInfo": p.version,
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "supplier": "NOASSERTION",
            "externalRefs": [{ "referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl(p, dist) }],
        });
        if let Some(src) = &p.source {
            pkg["sourceInfo"] = json!(format!("built from the source package {src}"));
        }
        packages.push(pkg);
        relationships.push(json!({ "spdxElementId": image_id, "relationshipType": "CONTAINS", "relatedSpdxElement": id }));
    }
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": format!("{}-{}", r.name, r.version),
        "documentNamespace": format!("https://spdx.org/spdxdocs/imgforge-{}-{}", spdx_id(&r.name), uuid_of(r)),
        "creationInfo": { "created": r.build_date, "creators": [format!("Tool: imgforge-{}", env!("CARGO_PKG_VERSION"))] },
        "packages": packages,
        "relationships": relationships,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec() -> Record {
        Record {
            id: "01JDQ8ZC2K4V6X8Y9A0B1C2D3E".into(),
            name: "base".into(),
            version: "1.4.0".into(),
            build_date: "2026-11-30T12:00:00Z".into(),
            distribution: Some("debian".into()),
            packages: vec![
                Package {
                    name: "libssl3".into(),
                    version: "3.0.11-1~deb12u2".into(),
                    arch: "amd64".into(),
                    source: Some("openssl".into()),
                },
                Package {
                    name: "openssh-server".into(),
                    version: "1:9.2p1-2".into(),
                    arch: "amd64".into(),
                    source: Some("openssh".into()),
                },
            ],
            ..Record::default()
        }
    }

    #[test]
    fn purls_encode_epochs() {
        let r = rec();
        assert_eq!(purl(&r.packages[1], Some("debian")), "pkg:deb/debian/openssh-server@1%3A9.2p1-2?arch=amd64&upstream=openssh");
        assert_eq!(purl(&r.packages[0], Some("ubuntu")), "pkg:deb/ubuntu/libssl3@3.0.11-1~deb12u2?arch=amd64&upstream=openssl");
    }

    #[test]
    fn cyclonedx_lists_every_package() {
        let d = document(&rec(), Format::Cyclonedx);
        assert_eq!(d["bomFormat"], "CycloneDX");
        assert_eq!(d["specVersion"], "1.5");
        assert!(d["serialNumber"].as_str().unwrap().starts_with("urn:uuid:"));
        let c = d["components"].as_array().unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(c[1]["version"], "1:9.2p1-2");
        assert_eq!(d["metadata"]["component"]["name"], "base");
        assert_eq!(d, document(&rec(), Format::Cyclonedx), "deterministic");
    }

    #[test]
    fn spdx_describes_the_image_which_contains_each_package() {
        let d = document(&rec(), Format::Spdx);
        assert_eq!(d["spdxVersion"], "SPDX-2.3");
        assert_eq!(d["packages"].as_array().unwrap().len(), 3);
        let rel = d["relationships"].as_array().unwrap();
        assert_eq!(rel.iter().filter(|r| r["relationshipType"] == "CONTAINS").count(), 2);
        assert_eq!(
            d["packages"][1]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&upstream=openssl"
        );
    }
}
