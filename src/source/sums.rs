//! Parsing of `SHA256SUMS` / `SHA512SUMS` style checksum files (the digests themselves are
//! computed by [`crate::io::hash`]).
//!
//! Both the GNU coreutils format (`HEX  name`, `HEX *name`) and the BSD / `--tag`
//! format (`SHA256 (name) = HEX`) are understood. The algorithm of a GNU line is
//! inferred from the digest length (64 hex digits → SHA-256, 128 → SHA-512); the
//! algorithm of a BSD line comes from its tag and must agree with the length.

pub use crate::io::hash::Algo;

/// Longest excerpt of an offending line quoted in an error message, in characters.
const MAX_QUOTED_LINE: usize = 120;

/// How many present names a "not found" error lists at most.
const MAX_LISTED_NAMES: usize = 5;

/// Errors produced while parsing a checksum file or looking up an entry in it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SumsError {
    /// A line is neither blank, a comment, nor a valid GNU/BSD checksum line.
    #[error("Failed to parse line {line} of checksum file ({reason}): {text:?}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        reason: String,
        /// The offending line, truncated to about 120 characters.
        text: String,
    },
    /// The checksum file has no entry whose basename matches the wanted file.
    #[error("Failed to find a checksum for {wanted} in {sums_name}: no entry has that file name (names present: {present})")]
    NotFound {
        /// Basename of the file that was looked up.
        wanted: String,
        /// Name of the checksum file.
        sums_name: String,
        /// Up to five names that were present, comma separated (or "none").
        present: String,
    },
    /// Two entries share the wanted basename but list different digests.
    #[error(
        "Failed to pick a checksum for {wanted} in {sums_name}: line {first_line} says {algo} {first_digest} but line {second_line} says {second_digest}"
    )]
    Ambiguous {
        /// Basename of the file that was looked up.
        wanted: String,
        /// Name of the checksum file.
        sums_name: String,
        /// Algorithm of both entries.
        algo: Algo,
        /// Line number of the first entry.
        first_line: usize,
        /// Digest listed by the first entry.
        first_digest: String,
        /// Line number of the conflicting entry.
        second_line: usize,
        /// Digest listed by the conflicting entry.
        second_digest: String,
    },
}

/// One checksum line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Algorithm of the digest.
    pub algo: Algo,
    /// Digest, lower-case hex.
    pub digest: String,
    /// File name exactly as written in the checksum file (GNU escapes undone).
    pub name: String,
    /// 1-based line number in the checksum file.
    pub line: usize,
}

impl Entry {
    /// The last path component of [`Entry::name`].
    pub fn basename(&self) -> &str {
        basename(&self.name)
    }
}

/// A downloaded file whose digest differs from the one in the checksum file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("checksum mismatch for {file}: expected {algo} {expected}, got {actual} (from {sums_url})")]
pub struct Mismatch {
    /// Digest listed in the checksum file (lower-case hex).
    pub expected: String,
    /// Digest computed over the file (lower-case hex).
    pub actual: String,
    /// Algorithm of both digests.
    pub algo: Algo,
    /// The file that was checked.
    pub file: String,
    /// Where the checksum file came from.
    pub sums_url: String,
}

/// Parse every entry of a checksum file.
///
/// Blank lines and lines starting with `#` are skipped; CRLF line endings and a leading
/// byte-order mark are accepted. Any other line that is not a valid GNU or BSD checksum line fails the
/// whole parse, naming the line.
pub fn parse(text: &str) -> Result<Vec<Entry>, SumsError> {
    let mut entries = Vec::new();
    // A byte-order mark (Windows editors write one) is not part of the first line.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let line = raw.trim_end_matches('\r').trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (algo, digest, name) = parse_line(line).map_err(|reason| SumsError::Malformed {
            line: line_no,
            reason,
            text: truncate(raw.trim_end_matches('\r')),
        })?;
        entries.push(Entry { algo, digest, name, line: line_no });
    }
    Ok(entries)
}

/// Find the entry for `wanted_name` in the checksum file `text`.
///
/// Entries are matched on the basename of their name against the basename of
/// `wanted_name`, so `./x.iso`, `*x.iso` and `/build/out/x.iso` all match `x.iso`.
/// The entry for the checksum file itself (basename `sums_name`) is ignored. Two
/// entries of the same algorithm for the same basename are accepted only if their
/// digests agree; the first matching entry is returned.
pub fn find(text: &str, wanted_name: &str, sums_name: &str) -> Result<Entry, SumsError> {
    let wanted = basename(wanted_name);
    let sums_base = basename(sums_name);
    let entries: Vec<Entry> = parse(text)?.into_iter().filter(|e| e.basename() != sums_base).collect();
    let mut matches = entries.iter().filter(|e| e.basename() == wanted);
    let Some(first) = matches.next() else {
        return Err(SumsError::NotFound { wanted: wanted.to_owned(), sums_name: sums_name.to_owned(), present: list_names(&entries) });
    };
    let conflict = matches.find(|e| e.algo == first.algo && e.digest != first.digest);
    if let Some(other) = conflict {
        return Err(SumsError::Ambiguous {
            wanted: wanted.to_owned(),
            sums_name: sums_name.to_owned(),
            algo: first.algo,
            first_line: first.line,
            first_digest: first.digest.clone(),
            second_line: other.line,
            second_digest: other.digest.clone(),
        });
    }
    Ok(first.clone())
}

/// Parse one non-blank, non-comment, trimmed line into `(algo, digest, name)`.
fn parse_line(line: &str) -> Result<(Algo, String, String), String> {
    if line.starts_with("-----BEGIN PGP") || line.starts_with("Hash: ") {
        return Err("looks like an OpenPGP clearsigned file; verify and strip the signature first".to_owned());
    }
    let tag_len = line.find(['(', ' ', '\t']).unwrap_or(line.len());
    let tag = &line[..tag_len];
    let rest = line[tag_len..].trim_start();
    if rest.starts_with('(') && !tag.is_empty() && !is_hex(tag) {
        return parse_bsd(tag, rest);
    }
    parse_gnu(line)
}

/// Parse a BSD/`--tag` line: `TAG (name) = hex`, where `rest` starts at `(`.
fn parse_bsd(tag: &str, rest: &str) -> Result<(Algo, String, String), String> {
    let algo = Algo::from_tag(tag).ok_or_else(|| format!("unsupported checksum algorithm {tag:?} (only SHA256 and SHA512)"))?;
    let eq = rest.rfind('=').ok_or_else(|| "BSD-style line has no '=' before the digest".to_owned())?;
    let inside = rest[..eq]
        .trim_end()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| "BSD-style line must look like 'SHA256 (name) = digest'".to_owned())?;
    if inside.is_empty() {
        return Err("empty file name".to_owned());
    }
    let digest = rest[eq + 1..].trim();
    check_digest(digest)?;
    if digest.len() != algo.hex_len() {
        return Err(format!("{algo} tag but the digest has {} hex digits (expected {})", digest.len(), algo.hex_len()));
    }
    Ok((algo, digest.to_ascii_lowercase(), inside.to_owned()))
}

/// Parse a GNU coreutils line: `hex  name`, `hex *name` or `\hex  escaped\\name`.
fn parse_gnu(line: &str) -> Result<(Algo, String, String), String> {
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(rest) => (true, rest),
        None => (false, line),
    };
    let split = line.find([' ', '\t']).ok_or_else(|| "expected '<digest>  <file name>'".to_owned())?;
    let digest = &line[..split];
    check_digest(digest)?;
    let algo = Algo::from_hex_len(digest.len())
        .ok_or_else(|| format!("digest has {} hex digits; expected 64 (SHA256) or 128 (SHA512)", digest.len()))?;
    // Separator blank(s), then an optional binary-mode marker '*'. Extra
    // alignment blanks are tolerated: no image file name starts with a blank.
    let after = line[split..].trim_start();
    let name = after.strip_prefix('*').unwrap_or(after);
    if name.is_empty() {
        return Err("missing file name after the digest".to_owned());
    }
    let name = if escaped { unescape_gnu(name)? } else { name.to_owned() };
    Ok((algo, digest.to_ascii_lowercase(), name))
}

/// Undo GNU `sha256sum` name escaping (`\\` → `\`, `\n` → newline, `\r` → CR).
fn unescape_gnu(name: &str) -> Result<String, String> {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            other => {
                return Err(format!("invalid escape sequence '\\{}'", other.unwrap_or(' ')));
            }
        }
    }
    Ok(out)
}

/// Ensure `digest` is non-empty and all hex digits.
fn check_digest(digest: &str) -> Result<(), String> {
    if digest.is_empty() {
        return Err("missing digest".to_owned());
    }
    if !is_hex(digest) {
        return Err(format!("digest {:?} is not hexadecimal", truncate(digest)));
    }
    Ok(())
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Last `/`-separated component of `name`.
fn basename(name: &str) -> &str {
    let trimmed = name.trim_end_matches('/');
    trimmed.rsplit('/').next().unwrap_or(trimmed)
}

/// Quote at most [`MAX_QUOTED_LINE`] characters of `s`.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(MAX_QUOTED_LINE) {
        Some((idx, _)) => format!("{}…", &s[..idx]),
        None => s.to_owned(),
    }
}

/// Comma-separated list of up to [`MAX_LISTED_NAMES`] entry names.
fn list_names(entries: &[Entry]) -> String {
    if entries.is_empty() {
        return "none".to_owned();
    }
    let mut listed: Vec<&str> = entries.iter().take(MAX_LISTED_NAMES).map(|e| e.name.as_str()).collect();
    let more = entries.len().saturating_sub(MAX_LISTED_NAMES);
    let more_text = format!("and {more} more");
    if more > 0 {
        listed.push(&more_text);
    }
    listed.join(", ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const D256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const D256B: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    const D512: &str =
        "cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e";

    fn one(text: &str) -> Entry {
        let entries = parse(text).unwrap();
        assert_eq!(entries.len(), 1, "{entries:?}");
        entries.into_iter().next().unwrap()
    }

    #[test]
    fn gnu_text_mode() {
        let e = one(&format!("{D256}  disk.qcow2\n"));
        assert_eq!(e.algo, Algo::Sha256);
        assert_eq!(e.digest, D256);
        assert_eq!(e.name, "disk.qcow2");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn gnu_binary_mode() {
        let e = one(&format!("{D256} *disk.iso"));
        assert_eq!(e.name, "disk.iso");
    }

    #[test]
    fn gnu_single_space_and_tab() {
        assert_eq!(one(&format!("{D256} disk.iso")).name, "disk.iso");
        assert_eq!(one(&format!("{D256}\tdisk.iso")).name, "disk.iso");
        assert_eq!(one(&format!("{D256}    disk.iso")).name, "disk.iso");
    }

    #[test]
    fn gnu_dot_slash_absolute_and_subdir_match_on_basename() {
        for name in ["./disk.iso", "/abs/build/path/disk.iso", "sub/dir/disk.iso"] {
            let text = format!("{D256}  {name}\n");
            let e = find(&text, "disk.iso", "SHA256SUMS").unwrap();
            assert_eq!(e.name, name);
            assert_eq!(e.digest, D256);
        }
    }

    #[test]
    fn wanted_name_is_reduced_to_basename() {
        let text = format!("{D256}  disk.iso\n");
        let e = find(&text, "/var/cache/imgforge/disk.iso", "SHA256SUMS").unwrap();
        assert_eq!(e.name, "disk.iso");
    }

    #[test]
    fn uppercase_digest_is_lowercased() {
        let e = one(&format!("{}  disk.iso", D256.to_uppercase()));
        assert_eq!(e.digest, D256);
    }

    #[test]
    fn gnu_sha512_detected_from_length() {
        let e = one(&format!("{D512}  disk.raw"));
        assert_eq!(e.algo, Algo::Sha512);
        assert_eq!(e.digest, D512);
    }

    #[test]
    fn gnu_escaped_name() {
        let e = one(&format!("\\{D256}  odd\\\\name\\nx"));
        assert_eq!(e.name, "odd\\name\nx");
    }

    #[test]
    fn bsd_with_spaces() {
        let e = one(&format!("SHA256 (disk.iso) = {D256}"));
        assert_eq!((e.algo, e.digest.as_str(), e.name.as_str()), (Algo::Sha256, D256, "disk.iso"));
    }

    #[test]
    fn bsd_compact() {
        let e = one(&format!("SHA256(disk.iso)= {D256}"));
        assert_eq!((e.algo, e.name.as_str()), (Algo::Sha256, "disk.iso"));
    }

    #[test]
    fn bsd_sha512_and_name_with_parens() {
        let e = one(&format!("SHA512 (disk (1).iso) = {D512}"));
        assert_eq!((e.algo, e.name.as_str()), (Algo::Sha512, "disk (1).iso"));
    }

    #[test]
    fn bsd_tag_disagreeing_with_length_is_error() {
        let err = parse(&format!("SHA512 (disk.iso) = {D256}")).unwrap_err();
        let SumsError::Malformed { line, reason, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(*line, 1);
        assert!(reason.contains("SHA512 tag but the digest has 64"), "{reason}");
    }

    #[test]
    fn bsd_unsupported_tag_is_error() {
        let err = parse("MD5 (disk.iso) = d41d8cd98f00b204e9800998ecf8427e").unwrap_err();
        assert!(err.to_string().contains("unsupported checksum algorithm \"MD5\""), "{err}");
    }

    #[test]
    fn crlf_blank_lines_and_comments() {
        let text = format!("# generated\r\n\r\n{D256}  a.iso\r\n   \r\n{D256B} *b.iso\r\n");
        let entries = parse(&text).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].name.as_str(), entries[0].line), ("a.iso", 3));
        assert_eq!((entries[1].name.as_str(), entries[1].line), ("b.iso", 5));
        assert!(!entries[1].name.ends_with('\r'));
    }

    #[test]
    fn entry_for_sums_file_itself_is_ignored_by_find() {
        let text = format!("{D256B}  SHA256SUMS\n{D256}  disk.iso\n");
        assert_eq!(parse(&text).unwrap().len(), 2);
        let err = find(&text, "SHA256SUMS", "https://example.invalid/SHA256SUMS").unwrap_err();
        assert!(matches!(err, SumsError::NotFound { .. }), "{err:?}");
        assert_eq!(find(&text, "disk.iso", "SHA256SUMS").unwrap().digest, D256);
    }

    #[test]
    fn malformed_line_names_line_number_and_shows_line() {
        let text = format!("{D256}  ok.iso\nthis is not a checksum line\n");
        let err = parse(&text).unwrap_err();
        assert!(matches!(err, SumsError::Malformed { line: 2, .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with("Failed to parse line 2 of checksum file"), "{msg}");
        assert!(msg.contains("this is not a checksum line"), "{msg}");
    }

    #[test]
    fn malformed_line_is_truncated() {
        let long = "z".repeat(500);
        let SumsError::Malformed { text, .. } = parse(&long).unwrap_err() else {
            panic!("expected Malformed");
        };
        assert_eq!(text.chars().count(), MAX_QUOTED_LINE + 1);
        assert!(text.ends_with('…'));
    }

    #[test]
    fn wrong_digest_length_and_missing_name_are_errors() {
        let short = parse("abcdef  disk.iso").unwrap_err();
        assert!(short.to_string().contains("has 6 hex digits"), "{short}");
        let noname = parse(D256).unwrap_err();
        assert!(matches!(noname, SumsError::Malformed { line: 1, .. }), "{noname:?}");
        let nonhex = parse(&format!("{}g  disk.iso", &D256[..63])).unwrap_err();
        assert!(nonhex.to_string().contains("not hexadecimal"), "{nonhex}");
    }

    #[test]
    fn clearsigned_input_gets_a_hint() {
        let err = parse("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n").unwrap_err();
        assert!(err.to_string().contains("clearsigned"), "{err}");
    }

    #[test]
    fn not_found_lists_up_to_five_names() {
        let text: String = (0..7).map(|i| format!("{D256}  f{i}.iso\n")).collect();
        let err = find(&text, "missing.iso", "SHA256SUMS").unwrap_err();
        let SumsError::NotFound { wanted, present, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(wanted, "missing.iso");
        assert_eq!(present, "f0.iso, f1.iso, f2.iso, f3.iso, f4.iso, and 2 more");
        assert!(err.to_string().contains("Failed to find a checksum for missing.iso in SHA256SUMS"));
    }

    #[test]
    fn not_found_in_empty_file() {
        let err = find("# nothing\n", "disk.iso", "SHA256SUMS").unwrap_err();
        assert!(matches!(&err, SumsError::NotFound { present, .. } if present == "none"), "{err:?}");
    }

    #[test]
    fn same_basename_different_digest_is_ambiguous() {
        let text = format!("{D256}  a/disk.iso\n{D256}  ./disk.iso\n{D256B}  b/disk.iso\n");
        let err = find(&text, "disk.iso", "SHA256SUMS").unwrap_err();
        assert_eq!(
            err,
            SumsError::Ambiguous {
                wanted: "disk.iso".into(),
                sums_name: "SHA256SUMS".into(),
                algo: Algo::Sha256,
                first_line: 1,
                first_digest: D256.into(),
                second_line: 3,
                second_digest: D256B.into(),
            }
        );
        assert!(err.to_string().contains("line 1 says SHA256"), "{err}");
    }

    #[test]
    fn same_basename_same_digest_is_fine() {
        let text = format!("{D256}  a/disk.iso\n{D256} *./disk.iso\n");
        let e = find(&text, "disk.iso", "SHA256SUMS").unwrap();
        assert_eq!((e.line, e.digest.as_str()), (1, D256));
    }

    #[test]
    fn algo_helpers() {
        assert_eq!(Algo::Sha256.hex_len(), 64);
        assert_eq!(Algo::Sha512.hex_len(), 128);
        assert_eq!(Algo::Sha512.to_string(), "SHA512");
        assert_eq!(Algo::from_hex_len(64), Some(Algo::Sha256));
        assert_eq!(Algo::from_hex_len(40), None);
        assert_eq!(Algo::from_tag("sha512"), Some(Algo::Sha512));
    }

    #[test]
    fn mismatch_message() {
        let e = one(&format!("{D256}  disk.iso"));
        let err = Mismatch {
            expected: e.digest,
            actual: D256B.into(),
            algo: e.algo,
            file: "disk.iso".into(),
            sums_url: "https://example.invalid/SHA256SUMS".into(),
        };
        assert_eq!(
            err.to_string(),
            format!("checksum mismatch for disk.iso: expected SHA256 {D256}, got {D256B} (from https://example.invalid/SHA256SUMS)")
        );
    }
}
