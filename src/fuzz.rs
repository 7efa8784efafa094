//! Fuzz targets: every parser of untrusted input, fed by libFuzzer (the `imgforge-fuzz` binary,
//! built with the `fuzz` feature and coverage instrumentation by `scripts/fuzz`). One binary
//! holds every target; `IMGFORGE_FUZZ_TARGET` names the one a run feeds. A target must never
//! panic, allocate by an unchecked header field (libFuzzer's `-rss_limit_mb`) or hang
//! (`-timeout`): an error is a correct answer to hostile bytes.

use std::io::Cursor;
use std::path::Path;

/// Every target, as `scripts/fuzz` runs them (its seed corpus is `tests/fuzz/<name>/`).
pub const TARGETS: &[&str] =
    &["partition", "lvm", "fsprobe", "qcow2", "vhd", "vmdk", "ova", "sums", "signature", "recipe", "netconf", "ledger", "record"];

/// The fixed message the `signature` target's signatures are checked against.
pub const SIGNED: &[u8] = b"imgforge fuzz\n";

fn target() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| std::env::var("IMGFORGE_FUZZ_TARGET").unwrap_or_default())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    run(target(), data);
});

/// Feeds `data` to the parser `name`. Results are ignored: only a panic, an abort, an
/// exhausted memory limit or a timeout is a finding.
pub fn run(name: &str, data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match name {
        "partition" => {
            let _ = crate::disk::partition::read(&mut Cursor::new(data), data.len() as u64);
            // A disk that claims to be larger than the bytes read.
            let _ = crate::disk::partition::read(&mut Cursor::new(data), (data.len() as u64).saturating_mul(8));
        }
        "lvm" => {
            let read = |o: u64, n: usize| -> std::io::Result<Vec<u8>> {
                let start = usize::try_from(o).map_err(|_| std::io::ErrorKind::InvalidInput)?;
                data.get(start..start.saturating_add(n)).map(<[u8]>::to_vec).ok_or_else(|| std::io::ErrorKind::UnexpectedEof.into())
            };
            if let Ok(Some((_, vg))) = crate::disk::lvm::read_pv(&read, data.len() as u64) {
                for lv in &vg.lvs {
                    let _ = vg.extent(lv);
                }
            }
            if let Ok(vg) = crate::disk::lvm::volume_group(&text) {
                for lv in &vg.lvs {
                    let _ = vg.extent(lv);
                }
            }
        }
        "fsprobe" => {
            let _ = crate::disk::fsprobe::probe(data);
            let _ = crate::disk::fsprobe::block_size(data);
        }
        "qcow2" => with_file(data, |path, file| {
            // Conversions of a small image only: a valid header may declare terabytes, whose
            // (correct) conversion is just slow.
            let declared = data.get(24..32).and_then(|b| b.try_into().ok()).map_or(0, u64::from_be_bytes);
            if declared <= 64 << 20 {
                if let Ok(out) = tempfile::tempfile_in(scratch()) {
                    let _ = crate::disk::convert::to_raw(path, &out, &crate::disk::convert::Progress::new(0));
                }
            }
            let _ = crate::disk::qcow2_compressed::Index::read(file);
        }),
        "vhd" => {
            let _ = crate::export::vhd::parse_footer(data);
            with_file(data, |_, file| {
                let _ = crate::export::vhd::find_footer(file);
                let _ = crate::export::vhd::detect(file);
            });
        }
        "vmdk" => {
            let _ = crate::export::check::vmdk::check_stream_vmdk_with(Cursor::new(data), &mut |_, _| {});
        }
        "ova" => with_file(data, |path, _| {
            let _ = crate::export::check::ova::check_ova_with(path, &mut |_, _| {});
        }),
        "sums" => {
            let _ = crate::source::sums::parse(&text);
            let _ = crate::source::sums::find(&text, "image.qcow2", "SHA256SUMS");
        }
        "signature" => {
            // [key length: u16 BE][key][signature]; the signature covers SIGNED.
            let len = data.get(..2).map_or(0, |b| usize::from(u16::from_be_bytes([b[0], b[1]])));
            let rest = data.get(2..).unwrap_or_default();
            let (key, sig) = rest.split_at(len.min(rest.len()));
            let _ = crate::source::signature::fingerprint(key);
            let _ = crate::source::signature::verify_detached(SIGNED, sig, key);
            let _ = crate::source::signature::verify_cleartext(&String::from_utf8_lossy(sig), key);
        }
        "recipe" => {
            if let Ok(dir) = tempfile::tempdir_in(scratch()) {
                let path = dir.path().join("recipe.toml");
                if std::fs::write(&path, data).is_ok() {
                    let _ = crate::recipe::plan::load_plans(&path, &crate::recipe::plan::Overrides::default());
                }
            }
        }
        "netconf" => {
            use crate::seal::netconf::{NetKind, neutralise};
            for kind in
                [NetKind::Netplan, NetKind::NmKeyfile, NetKind::Ifcfg, NetKind::NetworkdNetwork, NetKind::NetworkdLink, NetKind::UdevRules]
            {
                let _ = neutralise(kind, &text);
            }
        }
        "ledger" => {
            let _ = crate::publish::ledger::parse(&text);
        }
        "record" => {
            if let Ok(r) = crate::registry::sql::decode(&text) {
                let _ = crate::registry::json::record(&r);
                let _ = crate::registry::sql::encode(&r);
            }
        }
        other => panic!("IMGFORGE_FUZZ_TARGET={other:?}: not a target; the targets are {}", TARGETS.join(", ")),
    }
}

/// Where file-based targets write their input: memory, not the disk.
fn scratch() -> &'static Path {
    if Path::new("/dev/shm").is_dir() { Path::new("/dev/shm") } else { Path::new("/tmp") }
}

/// Writes `data` to a scratch file and hands its path and an open handle to `f`.
fn with_file(data: &[u8], f: impl FnOnce(&Path, &std::fs::File)) {
    let Ok(mut tmp) = tempfile::NamedTempFile::new_in(scratch()) else { return };
    if std::io::Write::write_all(&mut tmp, data).is_err() {
        return;
    }
    let path = tmp.path().to_path_buf();
    f(&path, tmp.as_file());
}
