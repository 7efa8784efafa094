//! OpenPGP signature verification against pinned public keys, with rPGP.
//!
//! Everything here fails closed: a result is `Ok` only when at least one
//! signature packet cryptographically verifies with the primary key, or with a
//! properly bound, signing-capable, unrevoked subkey, of one of the pinned keys.
//! Every other outcome is a distinct [`SignatureError`].

use pgp::composed::{CleartextSignedMessage, Deserializable, SignedPublicKey, SignedPublicSubKey, StandaloneSignature};
use pgp::errors::Error as PgpError;
use pgp::packet::{PublicKey, Signature, SignatureType};
use pgp::types::{Fingerprint, KeyDetails, KeyId, PublicKeyTrait};

/// Start of every ASCII-armor block.
const ARMOR_BEGIN: &str = "-----BEGIN PGP ";

/// The outcome of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Fingerprint of the pinned primary key that vouches for the signature, upper-case hex.
    pub fingerprint: String,
    /// Key ID (upper-case hex) of the key that made the signature: the primary key or a subkey.
    pub signer_key_id: String,
}

/// Why a signature could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The pinned key data is empty or only whitespace.
    #[error("Failed to read pinned public key: the key data is empty (expected the output of `gpg --export [--armor] KEYID`)")]
    EmptyKey,
    /// The pinned key data is not a parseable OpenPGP public key.
    #[error("Failed to parse pinned public key: {source} (expected the output of `gpg --export [--armor] KEYID`)")]
    ParseKey {
        /// The rPGP parse error.
        source: Box<PgpError>,
    },
    /// The pinned key data parsed, but holds no public key.
    #[error("Failed to find a public key in the pinned key data (expected the output of `gpg --export [--armor] KEYID`)")]
    NoKey,
    /// The signature was made by a pinned key that its owner has revoked.
    #[error(
        "Failed to accept signature by pinned key {fingerprint}: the key carries a valid revocation signature; obtain the publisher's current key"
    )]
    KeyRevoked {
        /// Fingerprint of the revoked key.
        fingerprint: String,
    },
    /// The signature verifies, but the key that made it had expired (or has, now), or the
    /// signature itself has expired: gpgv's EXPKEYSIG/EXPSIG, which apt refuses too.
    #[error(
        "Failed to accept signature by key {signer} (pinned key {fingerprint}): {what}; obtain the publisher's current key or a freshly signed checksums file"
    )]
    Expired {
        /// Key ID of the key that made the signature.
        signer: String,
        /// Fingerprint of the pinned key.
        fingerprint: String,
        /// What expired, and when.
        what: String,
    },
    /// The signature data is empty or only whitespace.
    #[error("Failed to read signature: the signature data is empty")]
    EmptySignature,
    /// The signature data is not a parseable detached OpenPGP signature.
    #[error("Failed to parse signature: {source} (expected a detached OpenPGP signature, binary or ASCII-armored)")]
    ParseSignature {
        /// The rPGP parse error.
        source: Box<PgpError>,
    },
    /// The clearsigned text could not be parsed.
    #[error("Failed to parse clearsigned message: {source} (expected text starting with '-----BEGIN PGP SIGNED MESSAGE-----')")]
    ParseCleartext {
        /// The rPGP parse error.
        source: Box<PgpError>,
    },
    /// No signature packet was found (or only ones rPGP skips as unsupported).
    #[error("Failed to find a signature: the signature data holds no signature packet of a supported version")]
    NoSignatures,
    /// No signature names any pinned key (or one of its subkeys) as its issuer.
    #[error(
        "Failed to verify signature: it was made by key ID {signer}, which is not the pinned key {pinned}; check that the pinned key is the one the publisher signs with"
    )]
    WrongKey {
        /// Issuer key ID(s) or fingerprint(s) named by the signature(s).
        signer: String,
        /// Fingerprint(s) of the pinned key(s).
        pinned: String,
    },
    /// The signature was made by a subkey that may not sign.
    #[error(
        "Failed to verify signature by subkey {signer} of pinned key {fingerprint}: that subkey has no valid signing binding (or is revoked)"
    )]
    UnusableSubkey {
        /// Key ID of the subkey.
        signer: String,
        /// Fingerprint of its primary key.
        fingerprint: String,
    },
    /// The signature names a pinned key but does not verify over the data.
    #[error(
        "Failed to verify signature by key ID {signer} (pinned key {fingerprint}): the data does not match the signature, so the file was modified or the signature belongs to another file: {source}"
    )]
    BadSignature {
        /// Key ID of the key that was tried.
        signer: String,
        /// Fingerprint of the pinned primary key.
        fingerprint: String,
        /// The rPGP verification error.
        source: Box<PgpError>,
    },
    /// The signature uses an algorithm or packet version rPGP cannot verify.
    #[error("Failed to verify signature by key ID {signer}: unsupported algorithm or signature version: {source}")]
    Unsupported {
        /// Key ID of the key that was tried.
        signer: String,
        /// The rPGP error.
        source: Box<PgpError>,
    },
    /// The signature is not a document signature (e.g. a key certification).
    #[error("Failed to verify signature: it is a {kind} signature, not a signature over a file or text")]
    NotADocumentSignature {
        /// The signature type found.
        kind: String,
    },
}

impl SignatureError {
    /// How informative this error is when several signatures fail: higher wins.
    fn rank(&self) -> u8 {
        match self {
            SignatureError::BadSignature { .. } => 5,
            SignatureError::Unsupported { .. } => 4,
            SignatureError::KeyRevoked { .. } | SignatureError::UnusableSubkey { .. } | SignatureError::Expired { .. } => 3,
            SignatureError::NotADocumentSignature { .. } => 2,
            _ => 1,
        }
    }
}

/// Verify a detached signature over `data` against the pinned public key(s) in `key`.
///
/// `signature` may be binary or ASCII-armored (auto-detected); so may `key`, an
/// exported public key file that may hold several keys (several armor blocks are
/// fine). Succeeds only if at least one signature packet verifies with the
/// primary key or a signing-capable subkey of a pinned key.
pub fn verify_detached(data: &[u8], signature: &[u8], key: &[u8]) -> Result<Verified, SignatureError> {
    let keys = parse_keys(key)?;
    let signatures = parse_signatures(signature)?;
    let sigs: Vec<&Signature> = signatures.iter().map(|s| &s.signature).collect();
    verify_any(&sigs, &keys, data)
}

/// Verify a clearsigned message against the pinned public key(s) in `key`.
///
/// Returns the signed text (dash-escaping undone, trailing blanks trimmed as the
/// signature covers it, LF line endings, no final newline) and the [`Verified`]
/// signer. Use only the returned text: anything outside the signed part is dropped.
pub fn verify_cleartext(signed: &str, key: &[u8]) -> Result<(String, Verified), SignatureError> {
    let keys = parse_keys(key)?;
    let (msg, _headers) =
        CleartextSignedMessage::from_string(signed).map_err(|source| SignatureError::ParseCleartext { source: Box::new(source) })?;
    let sigs: Vec<&Signature> = msg.signatures().iter().map(|s| &s.signature).collect();
    if sigs.is_empty() {
        return Err(SignatureError::NoSignatures);
    }
    let text = msg.signed_text();
    let verified = verify_any(&sigs, &keys, text.as_bytes())?;
    Ok((text.replace("\r\n", "\n"), verified))
}

/// Fingerprint (upper-case hex) of the first public key in `key` (armored or binary).
pub fn fingerprint(key: &[u8]) -> Result<String, SignatureError> {
    let keys = parse_keys(key)?;
    keys.first().map(|k| fmt_hex(k.fingerprint().as_bytes())).ok_or(SignatureError::NoKey)
}

/// Parse all public keys in `key`, failing on any malformed key.
fn parse_keys(key: &[u8]) -> Result<Vec<SignedPublicKey>, SignatureError> {
    if key.iter().all(u8::is_ascii_whitespace) {
        return Err(SignatureError::EmptyKey);
    }
    let keys: Vec<SignedPublicKey> = parse_all(key).map_err(|source| SignatureError::ParseKey { source: Box::new(source) })?;
    if keys.is_empty() {
        return Err(SignatureError::NoKey);
    }
    Ok(keys)
}

/// Parse all detached signatures in `signature`.
fn parse_signatures(signature: &[u8]) -> Result<Vec<StandaloneSignature>, SignatureError> {
    if signature.iter().all(u8::is_ascii_whitespace) {
        return Err(SignatureError::EmptySignature);
    }
    let sigs: Vec<StandaloneSignature> =
        parse_all(signature).map_err(|source| SignatureError::ParseSignature { source: Box::new(source) })?;
    if sigs.is_empty() {
        return Err(SignatureError::NoSignatures);
    }
    Ok(sigs)
}

/// Parse every item of type `T` from binary data or from one or more armor blocks.
fn parse_all<T: Deserializable>(input: &[u8]) -> Result<Vec<T>, PgpError> {
    if input.first().is_some_and(|b| b & 0x80 != 0) {
        return T::from_bytes_many(input)?.collect();
    }
    let text = String::from_utf8_lossy(input);
    let starts: Vec<usize> = text.match_indices(ARMOR_BEGIN).map(|(i, _)| i).collect();
    if starts.is_empty() {
        // Let rPGP produce its own "no armor header" error.
        return T::from_armor_many_buf(input)?.0.collect();
    }
    let mut out = Vec::new();
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(text.len());
        let block = text[start..end].as_bytes();
        for item in T::from_armor_many_buf(block)?.0 {
            out.push(item?);
        }
    }
    Ok(out)
}

/// Whether `key` carries a key revocation signature made by itself that verifies.
fn is_revoked(key: &SignedPublicKey) -> bool {
    key.details
        .revocation_signatures
        .iter()
        .any(|sig| sig.typ() == Some(SignatureType::KeyRevocation) && sig.verify_key(&key.primary_key).is_ok())
}

/// A key that may have made a signature: a pinned primary key or one of its subkeys.
enum Signer<'a> {
    Primary(&'a PublicKey),
    Subkey { key: &'a SignedPublicSubKey, can_sign: bool },
}

impl Signer<'_> {
    fn key_id(&self) -> KeyId {
        match self {
            Signer::Primary(k) => k.key_id(),
            Signer::Subkey { key, .. } => key.key_id(),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        match self {
            Signer::Primary(k) => k.fingerprint(),
            Signer::Subkey { key, .. } => key.fingerprint(),
        }
    }

    /// Whether `sig` names this key as issuer (or names no issuer at all).
    fn is_named_by(&self, sig: &Signature) -> bool {
        let ids = sig.issuer();
        let fps = sig.issuer_fingerprint();
        if ids.is_empty() && fps.is_empty() {
            return true;
        }
        let (id, fp) = (self.key_id(), self.fingerprint());
        ids.iter().any(|i| **i == id) || fps.iter().any(|f| **f == fp)
    }

    fn verify(&self, sig: &Signature, data: &[u8]) -> Result<(), PgpError> {
        match self {
            Signer::Primary(k) => sig.verify(*k, data),
            Signer::Subkey { key, .. } => sig.verify(*key, data),
        }
    }
}

/// The primary key and all subkeys of `key`, with each subkey's signing capability.
fn signers(key: &SignedPublicKey) -> Vec<Signer<'_>> {
    let mut out = vec![Signer::Primary(&key.primary_key)];
    out.extend(key.public_subkeys.iter().map(|sub| Signer::Subkey { key: sub, can_sign: subkey_can_sign(&key.primary_key, sub) }));
    out
}

/// Whether `sub` is bound to `primary` as an unrevoked signing subkey (with back-signature).
fn subkey_can_sign(primary: &PublicKey, sub: &SignedPublicSubKey) -> bool {
    let valid = |sig: &Signature| sig.verify_subkey_binding(primary, &sub.key).is_ok();
    let revoked = sub.signatures.iter().any(|s| s.typ() == Some(SignatureType::SubkeyRevocation) && valid(s));
    if revoked {
        return false;
    }
    sub.signatures.iter().any(|s| {
        s.typ() == Some(SignatureType::SubkeyBinding)
            && s.key_flags().sign()
            && valid(s)
            && s.embedded_signature().is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok())
    })
}

/// Succeed on the first signature that verifies; otherwise return the most telling error.
fn verify_any(sigs: &[&Signature], keys: &[SignedPublicKey], data: &[u8]) -> Result<Verified, SignatureError> {
    let mut worst: Option<SignatureError> = None;
    for sig in sigs {
        match verify_one(sig, keys, data) {
            Ok(v) => return Ok(v),
            Err(e) if worst.as_ref().is_none_or(|w| e.rank() > w.rank()) => worst = Some(e),
            Err(_) => {}
        }
    }
    Err(worst.unwrap_or(SignatureError::NoSignatures))
}

/// Try one signature packet against every candidate key it names.
fn verify_one(sig: &Signature, keys: &[SignedPublicKey], data: &[u8]) -> Result<Verified, SignatureError> {
    if let Some(kind) = sig.typ()
        && !matches!(kind, SignatureType::Binary | SignatureType::Text)
    {
        return Err(SignatureError::NotADocumentSignature { kind: format!("{kind:?}") });
    }
    let mut worst: Option<SignatureError> = None;
    for key in keys {
        let fingerprint = fmt_hex(key.fingerprint().as_bytes());
        let revoked = is_revoked(key);
        for signer in signers(key).iter().filter(|s| s.is_named_by(sig)) {
            let signer_key_id = fmt_hex(signer.key_id().as_ref());
            let err = match signer {
                _ if revoked => SignatureError::KeyRevoked { fingerprint: fingerprint.clone() },
                Signer::Subkey { can_sign: false, .. } => {
                    SignatureError::UnusableSubkey { signer: signer_key_id, fingerprint: fingerprint.clone() }
                }
                _ => match signer.verify(sig, data) {
                    Ok(()) => match expired(key, signer, sig, unix_now()) {
                        None => return Ok(Verified { fingerprint, signer_key_id }),
                        Some(what) => SignatureError::Expired { signer: signer_key_id, fingerprint: fingerprint.clone(), what },
                    },
                    Err(source) => classify(source, signer_key_id, &fingerprint),
                },
            };
            if worst.as_ref().is_none_or(|w| err.rank() > w.rank()) {
                worst = Some(err);
            }
        }
    }
    Err(worst.unwrap_or_else(|| wrong_key(sig, keys)))
}

fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn rfc3339(t: i64) -> String {
    crate::stamp::rfc3339(u64::try_from(t).unwrap_or(0))
}

/// When the key that made `sig` expires (seconds since the epoch); `None` if never. A key
/// expiration time of 0 means no expiry.
fn expiry_of(key: &SignedPublicKey, signer: &Signer) -> Option<i64> {
    let (created, lifetime) = match signer {
        Signer::Primary(k) => (k.created_at().timestamp(), key.details.key_expiration_time().map(|d| d.num_seconds())),
        Signer::Subkey { key: sub, .. } => {
            (sub.key.created_at().timestamp(), sub.signatures.iter().filter_map(|s| s.key_expiration_time()).map(|d| d.num_seconds()).max())
        }
    };
    lifetime.filter(|s| *s > 0).map(|s| created.saturating_add(s))
}

/// Why a verified signature must still be refused: its key (primary, and for a subkey also
/// the primary) expired before it was made or before `now`, or the signature expired. Pure.
fn expired(key: &SignedPublicKey, signer: &Signer, sig: &Signature, now: i64) -> Option<String> {
    let made = sig.created().map(|c| c.timestamp());
    let mut ends = vec![("the key", expiry_of(key, signer))];
    if matches!(signer, Signer::Subkey { .. }) {
        ends.push(("the primary key", expiry_of(key, &Signer::Primary(&key.primary_key))));
    }
    for (which, end) in ends {
        let Some(end) = end else { continue };
        if made.is_some_and(|m| m >= end) {
            return Some(format!("the signature was made after {which} expired on {}", rfc3339(end)));
        }
        if now >= end {
            return Some(format!("{which} expired on {}", rfc3339(end)));
        }
    }
    let lifetime = sig.signature_expiration_time().map(|d| d.num_seconds()).filter(|s| *s > 0);
    match (made, lifetime) {
        (Some(m), Some(l)) if now >= m.saturating_add(l) => Some(format!("the signature expired on {}", rfc3339(m.saturating_add(l)))),
        _ => None,
    }
}

/// Turn an rPGP verification error into `Unsupported` or `BadSignature`.
fn classify(source: PgpError, signer: String, fingerprint: &str) -> SignatureError {
    let unsupported = |e: &PgpError| matches!(e, PgpError::Unsupported { .. } | PgpError::Unimplemented { .. });
    let is_unsupported = match &source {
        PgpError::InvalidPacketContent { source } => unsupported(source),
        other => unsupported(other),
    };
    let source = Box::new(source);
    if is_unsupported {
        SignatureError::Unsupported { signer, source }
    } else {
        SignatureError::BadSignature { signer, fingerprint: fingerprint.to_owned(), source }
    }
}

/// Build the error for a signature whose issuer is none of the pinned keys.
fn wrong_key(sig: &Signature, keys: &[SignedPublicKey]) -> SignatureError {
    // Prefer the 16-hex-digit key ID(s); v6 signatures may name only a fingerprint.
    let mut named: Vec<String> = sig.issuer().iter().map(|id| fmt_hex(id.as_ref())).collect();
    if named.is_empty() {
        named = sig.issuer_fingerprint().iter().map(|f| fmt_hex(f.as_bytes())).collect();
    }
    named.dedup();
    let signer = if named.is_empty() { "(none named)".to_owned() } else { named.join(", ") };
    let pinned: Vec<String> = keys.iter().map(|k| fmt_hex(k.fingerprint().as_bytes())).collect();
    SignatureError::WrongKey { signer, pinned: pinned.join(", ") }
}

fn fmt_hex(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::path::Path;
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;

    use super::*;

    const DATA: &[u8] = b"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  disk.iso\n";
    const SUMS: &str = "# signed sums\n-leading dash line\n\
        e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  disk.iso\n";

    /// Keys, signatures and clearsigned texts made once by the real `gpg`.
    struct Fixture {
        rsa_fpr: String,
        rsa_pub_asc: Vec<u8>,
        rsa_pub_bin: Vec<u8>,
        rsa_sig_bin: Vec<u8>,
        rsa_sig_asc: Vec<u8>,
        rsa_clear: String,
        ed_fpr: String,
        ed_pub_asc: Vec<u8>,
        ed_pub_bin: Vec<u8>,
        ed_sig_bin: Vec<u8>,
        ed_sig_asc: Vec<u8>,
        both_sig_bin: Vec<u8>,
        sub_fpr: String,
        sub_signing_fpr: String,
        sub_pub_asc: Vec<u8>,
        sub_sig_bin: Vec<u8>,
        sub_revoked_pub_asc: Vec<u8>,
        revoked_fpr: String,
        revoked_pub_asc: Vec<u8>,
        revoked_sig_bin: Vec<u8>,
    }

    fn gpg(home: &Path, args: &[&str], stdin: &[u8]) -> Vec<u8> {
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", home)
            .args(["--batch", "--yes", "--quiet", "--pinentry-mode", "loopback"])
            .args(["--passphrase", ""])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "gpg {args:?} failed: {stderr}");
        out.stdout
    }

    /// All fingerprints gpg lists for `uid`: the primary first, then subkeys.
    fn gpg_fprs(home: &Path, uid: &str) -> Vec<String> {
        let out = gpg(home, &["--with-colons", "--fingerprint", "--fingerprint", uid], b"");
        String::from_utf8(out).unwrap().lines().filter_map(|l| l.strip_prefix("fpr:")).map(|l| l.trim_matches(':').to_owned()).collect()
    }

    fn gen_key(home: &Path, uid: &str, algo: &str, usage: &str) -> String {
        gpg(home, &["--quick-gen-key", uid, algo, usage, "never"], b"");
        gpg_fprs(home, uid).remove(0)
    }

    fn sign(home: &Path, signer: &str, armor: bool) -> Vec<u8> {
        let mut args = vec!["--local-user", signer, "--detach-sign"];
        if armor {
            args.push("--armor");
        }
        gpg(home, &args, DATA)
    }

    fn export(home: &Path, fpr: &str, armor: bool) -> Vec<u8> {
        let mut args = vec!["--export"];
        if armor {
            args.push("--armor");
        }
        args.push(fpr);
        gpg(home, &args, b"")
    }

    fn add_subkey_key(home: &Path, f: &mut Fixture) {
        f.sub_fpr = gen_key(home, "sub <sub@example.invalid>", "ed25519", "cert");
        gpg(home, &["--quick-add-key", &f.sub_fpr, "ed25519", "sign", "never"], b"");
        f.sub_signing_fpr = gpg_fprs(home, &f.sub_fpr).remove(1);
        f.sub_pub_asc = export(home, &f.sub_fpr, true);
        f.sub_sig_bin = sign(home, &f.sub_fpr, false);
        let script = b"key 1\nrevkey\ny\n0\n\ny\nsave\n";
        gpg(home, &["--command-fd", "0", "--edit-key", &f.sub_fpr], script);
        f.sub_revoked_pub_asc = export(home, &f.sub_fpr, true);
    }

    fn add_revoked_key(home: &Path, f: &mut Fixture) {
        let fpr = gen_key(home, "rev <rev@example.invalid>", "ed25519", "sign");
        f.revoked_sig_bin = sign(home, &fpr, false);
        let cert = std::fs::read_to_string(home.join(format!("openpgp-revocs.d/{fpr}.rev")));
        let cert = cert.unwrap().replace(":-----BEGIN", "-----BEGIN");
        gpg(home, &["--import"], cert.as_bytes());
        f.revoked_pub_asc = export(home, &fpr, true);
        f.revoked_fpr = fpr;
    }

    fn build_fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path();
        let rsa = gen_key(home, "rsa <rsa@example.invalid>", "rsa3072", "sign");
        let ed = gen_key(home, "ed <ed@example.invalid>", "ed25519", "sign");
        let mut f = Fixture {
            rsa_pub_asc: export(home, &rsa, true),
            rsa_pub_bin: export(home, &rsa, false),
            rsa_sig_bin: sign(home, &rsa, false),
            rsa_sig_asc: sign(home, &rsa, true),
            rsa_clear: String::from_utf8(gpg(home, &["-u", &rsa, "--clearsign"], SUMS.as_bytes())).unwrap(),
            ed_pub_asc: export(home, &ed, true),
            ed_pub_bin: export(home, &ed, false),
            ed_sig_bin: sign(home, &ed, false),
            ed_sig_asc: sign(home, &ed, true),
            both_sig_bin: gpg(home, &["-u", &rsa, "-u", &ed, "--detach-sign"], DATA),
            rsa_fpr: rsa,
            ed_fpr: ed,
            sub_fpr: String::new(),
            sub_signing_fpr: String::new(),
            sub_pub_asc: Vec::new(),
            sub_sig_bin: Vec::new(),
            sub_revoked_pub_asc: Vec::new(),
            revoked_fpr: String::new(),
            revoked_pub_asc: Vec::new(),
            revoked_sig_bin: Vec::new(),
        };
        add_subkey_key(home, &mut f);
        add_revoked_key(home, &mut f);
        let _ = Command::new("gpgconf").env("GNUPGHOME", home).args(["--kill", "gpg-agent"]).status();
        f
    }

    fn fx() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(build_fixture)
    }

    fn key_id_of(fpr: &str) -> String {
        fpr[fpr.len() - 16..].to_owned()
    }

    fn tampered() -> Vec<u8> {
        let mut data = DATA.to_vec();
        data[0] ^= 0x01;
        data
    }

    #[test]
    fn rsa_detached_binary_and_armored_verify() {
        let f = fx();
        for (sig, key) in [(&f.rsa_sig_bin, &f.rsa_pub_asc), (&f.rsa_sig_asc, &f.rsa_pub_bin), (&f.rsa_sig_asc, &f.rsa_pub_asc)] {
            let v = verify_detached(DATA, sig, key).unwrap();
            assert_eq!(v.fingerprint, f.rsa_fpr);
            assert_eq!(v.signer_key_id, key_id_of(&f.rsa_fpr));
        }
    }

    #[test]
    fn ed25519_detached_binary_and_armored_verify() {
        let f = fx();
        for (sig, key) in [(&f.ed_sig_bin, &f.ed_pub_bin), (&f.ed_sig_asc, &f.ed_pub_asc)] {
            let v = verify_detached(DATA, sig, key).unwrap();
            assert_eq!(v.fingerprint, f.ed_fpr);
            assert_eq!(v.signer_key_id, key_id_of(&f.ed_fpr));
        }
    }

    #[test]
    fn tampered_data_is_rejected() {
        let f = fx();
        for (sig, key, fpr) in [(&f.rsa_sig_bin, &f.rsa_pub_asc, &f.rsa_fpr), (&f.ed_sig_asc, &f.ed_pub_bin, &f.ed_fpr)] {
            let err = verify_detached(&tampered(), sig, key).unwrap_err();
            assert!(matches!(&err, SignatureError::BadSignature { fingerprint, .. } if fingerprint == fpr), "{err:?}");
            assert!(err.to_string().contains("the data does not match the signature"), "{err}");
        }
        assert!(verify_detached(b"", &f.ed_sig_bin, &f.ed_pub_bin).is_err());
    }

    #[test]
    fn signature_by_other_key_is_rejected() {
        let f = fx();
        let err = verify_detached(DATA, &f.ed_sig_bin, &f.rsa_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::WrongKey { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&key_id_of(&f.ed_fpr)), "{msg}");
        assert!(msg.contains(&format!("which is not the pinned key {}", f.rsa_fpr)), "{msg}");
    }

    #[test]
    fn one_good_signature_among_several_is_enough() {
        let f = fx();
        let v = verify_detached(DATA, &f.both_sig_bin, &f.ed_pub_asc).unwrap();
        assert_eq!(v.fingerprint, f.ed_fpr);
        let v = verify_detached(DATA, &f.both_sig_bin, &f.rsa_pub_bin).unwrap();
        assert_eq!(v.fingerprint, f.rsa_fpr);
        let err = verify_detached(DATA, &f.both_sig_bin, &f.sub_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::WrongKey { .. }), "{err:?}");
    }

    #[test]
    fn keyring_with_several_armored_blocks() {
        let f = fx();
        let mut ring = f.rsa_pub_asc.clone();
        ring.extend_from_slice(b"\n");
        ring.extend_from_slice(&f.ed_pub_asc);
        let v = verify_detached(DATA, &f.ed_sig_bin, &ring).unwrap();
        assert_eq!(v.fingerprint, f.ed_fpr);
        assert_eq!(fingerprint(&ring).unwrap(), f.rsa_fpr);
        let mut bin_ring = f.rsa_pub_bin.clone();
        bin_ring.extend_from_slice(&f.ed_pub_bin);
        assert_eq!(verify_detached(DATA, &f.ed_sig_asc, &bin_ring).unwrap().fingerprint, f.ed_fpr);
    }

    #[test]
    fn signing_subkey_verifies_and_reports_primary() {
        let f = fx();
        let v = verify_detached(DATA, &f.sub_sig_bin, &f.sub_pub_asc).unwrap();
        assert_eq!(v.fingerprint, f.sub_fpr);
        assert_eq!(v.signer_key_id, key_id_of(&f.sub_signing_fpr));
        assert_ne!(f.sub_fpr, f.sub_signing_fpr);
        let err = verify_detached(&tampered(), &f.sub_sig_bin, &f.sub_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err:?}");
    }

    #[test]
    fn revoked_signing_subkey_is_rejected() {
        let f = fx();
        assert_ne!(f.sub_revoked_pub_asc, f.sub_pub_asc);
        let err = verify_detached(DATA, &f.sub_sig_bin, &f.sub_revoked_pub_asc).unwrap_err();
        let SignatureError::UnusableSubkey { signer, fingerprint } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!(signer, &key_id_of(&f.sub_signing_fpr));
        assert_eq!(fingerprint, &f.sub_fpr);
    }

    #[test]
    fn revoked_key_is_rejected() {
        let f = fx();
        let err = verify_detached(DATA, &f.revoked_sig_bin, &f.revoked_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::KeyRevoked { .. }), "{err:?}");
        // Another, unrevoked key in the same pinned file still verifies its own signatures.
        let mut ring = f.revoked_pub_asc.clone();
        ring.extend_from_slice(&f.ed_pub_asc);
        assert_eq!(verify_detached(DATA, &f.ed_sig_bin, &ring).unwrap().fingerprint, f.ed_fpr);
        let err = verify_detached(DATA, &f.revoked_sig_bin, &ring).unwrap_err();
        assert!(matches!(err, SignatureError::KeyRevoked { .. }), "{err:?}");
        // The fingerprint of a revoked key can still be read.
        assert_eq!(fingerprint(&f.revoked_pub_asc).unwrap(), f.revoked_fpr);
    }

    #[test]
    fn garbage_and_empty_signatures_are_rejected() {
        let f = fx();
        let err = verify_detached(DATA, b"not a signature at all", &f.rsa_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::ParseSignature { .. }), "{err:?}");
        let err = verify_detached(DATA, &[0x89, 0xff, 0x00, 0x13, 0x37], &f.rsa_pub_asc);
        assert!(err.is_err(), "{err:?}");
        let err = verify_detached(DATA, b" \n", &f.rsa_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::EmptySignature), "{err:?}");
        let err = verify_detached(DATA, &f.rsa_pub_asc, &f.rsa_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::ParseSignature { .. }), "{err:?}");
        // A lone marker packet parses to zero signature packets.
        let err = verify_detached(DATA, &[0xca, 0x03, b'P', b'G', b'P'], &f.rsa_pub_asc);
        assert!(matches!(err, Err(SignatureError::NoSignatures)), "{err:?}");
    }

    #[test]
    fn corrupted_armor_checksum_or_body_is_rejected() {
        let f = fx();
        let text = String::from_utf8(f.ed_sig_asc.clone()).unwrap();
        let body_line = text.lines().nth(2).unwrap();
        let flipped: String = body_line.chars().rev().collect();
        let broken = text.replacen(body_line, &flipped, 1);
        assert!(verify_detached(DATA, broken.as_bytes(), &f.ed_pub_asc).is_err());
    }

    #[test]
    fn unknown_hash_algorithm_is_unsupported() {
        let f = fx();
        let mut sig = f.ed_sig_bin.clone();
        let header_len = match sig[0] {
            b if b & 0x40 != 0 => 2, // new format with a one-octet length
            b => 1 + [1, 2, 4][usize::from(b & 0x03)],
        };
        assert_eq!(sig[header_len], 4, "expected a v4 signature");
        sig[header_len + 3] = 100; // private/experimental hash algorithm ID
        let err = verify_detached(DATA, &sig, &f.ed_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::Unsupported { .. }), "{err:?}");
    }

    #[test]
    fn empty_and_garbage_keys_are_rejected() {
        let f = fx();
        let err = verify_detached(DATA, &f.rsa_sig_bin, b"").unwrap_err();
        assert!(matches!(err, SignatureError::EmptyKey), "{err:?}");
        let err = verify_detached(DATA, &f.rsa_sig_bin, b"garbage key").unwrap_err();
        assert!(matches!(err, SignatureError::ParseKey { .. }), "{err:?}");
        let err = verify_detached(DATA, &f.rsa_sig_bin, &f.rsa_sig_asc).unwrap_err();
        assert!(matches!(err, SignatureError::ParseKey { .. }), "{err:?}");
        assert!(matches!(fingerprint(b"\n"), Err(SignatureError::EmptyKey)));
    }

    #[test]
    fn fingerprint_matches_gpg() {
        let f = fx();
        assert_eq!(fingerprint(&f.rsa_pub_asc).unwrap(), f.rsa_fpr);
        assert_eq!(fingerprint(&f.rsa_pub_bin).unwrap(), f.rsa_fpr);
        assert_eq!(fingerprint(&f.ed_pub_bin).unwrap(), f.ed_fpr);
        assert_eq!(fingerprint(&f.sub_pub_asc).unwrap(), f.sub_fpr);
    }

    #[test]
    fn clearsigned_verifies_and_returns_signed_text() {
        let f = fx();
        let (text, v) = verify_cleartext(&f.rsa_clear, &f.rsa_pub_asc).unwrap();
        assert_eq!(text, SUMS.trim_end_matches('\n'));
        assert_eq!(v.fingerprint, f.rsa_fpr);
        let crlf = f.rsa_clear.replace('\n', "\r\n");
        let (text, _) = verify_cleartext(&crlf, &f.rsa_pub_bin).unwrap();
        assert_eq!(text, SUMS.trim_end_matches('\n'));
    }

    #[test]
    fn tampered_clearsigned_is_rejected() {
        let f = fx();
        let forged = f.rsa_clear.replace("disk.iso", "evil.iso");
        assert_ne!(forged, f.rsa_clear);
        let err = verify_cleartext(&forged, &f.rsa_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err:?}");
        let err = verify_cleartext(&f.rsa_clear, &f.ed_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::WrongKey { .. }), "{err:?}");
        let err = verify_cleartext(SUMS, &f.rsa_pub_asc).unwrap_err();
        assert!(matches!(err, SignatureError::ParseCleartext { .. }), "{err:?}");
        let err = verify_cleartext(&f.rsa_clear, b"").unwrap_err();
        assert!(matches!(err, SignatureError::EmptyKey), "{err:?}");
    }
}
