//! `[[firstboot]]`: scripts the image runs once, in order, on its first boot. Installed after
//! the recipe's provisioners as a oneshot systemd unit whose runner logs each script to the
//! journal (and the console), then disables and removes the unit, itself and the scripts.

use std::path::Path;

use super::plan::FirstbootPlan;
use crate::chroot::resolve::Root;
use crate::progress::Events;

/// Where the runner and the scripts live in the image.
pub const DIR: &str = "/usr/local/lib/imgforge-firstboot";
/// The unit.
pub const UNIT: &str = "/etc/systemd/system/imgforge-firstboot.service";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/imgforge-firstboot.service";

const UNIT_TEXT: &str = "[Unit]\nDescription=imgforge first-boot scripts (run once, then removed)\nWants=network-online.target\nAfter=network-online.target\nConditionPathExists=/usr/local/lib/imgforge-firstboot/run\n\n[Service]\nType=oneshot\nExecStart=/usr/local/lib/imgforge-firstboot/run\nStandardOutput=journal+console\nStandardError=journal+console\n\n[Install]\nWantedBy=multi-user.target\n";

const RUNNER: &str = r#"#!/bin/sh
# imgforge first-boot runner: each script once, in order; then the unit, the scripts and this
# runner are removed. A failing script is logged and the others still run.
dir=/usr/local/lib/imgforge-firstboot
status=0
for f in "$dir"/scripts/*; do
  [ -f "$f" ] || continue
  name=$(basename "$f")
  echo "imgforge-firstboot: running $name"
  if "$f"; then
    echo "imgforge-firstboot: $name done"
  else
    echo "imgforge-firstboot: $name failed (exit $?)"
    status=1
  fi
  rm -f "$f"
done
rm -f /etc/systemd/system/multi-user.target.wants/imgforge-firstboot.service /etc/systemd/system/imgforge-firstboot.service
rm -rf "$dir"
echo "imgforge-firstboot: finished; the unit removed itself"
exit $status
"#;

/// Installs the runner, the scripts (`NN-name`, in order) and the enabled unit.
pub fn install(root: &Root, label: &str, p: &FirstbootPlan, events: &Events) -> anyhow::Result<()> {
    let dir = Path::new(DIR);
    root.mkdir_all(&dir.join("scripts"), 0o755)?;
    root.write(&dir.join("run"), RUNNER.as_bytes(), 0o755)?;
    for (i, (name, body)) in p.scripts.iter().enumerate() {
        let file = dir.join("scripts").join(format!("{:02}-{name}", i + 1));
        let body = if body.starts_with(b"#!") { body.clone() } else { [b"#!/bin/sh -e\n".as_slice(), body].concat() };
        root.write(&file, &body, 0o755)?;
    }
    root.mkdir_all(Path::new("/etc/systemd/system/multi-user.target.wants"), 0o755)?;
    root.write(Path::new(UNIT), UNIT_TEXT.as_bytes(), 0o644)?;
    root.remove_file(Path::new(WANTS))?;
    root.symlink(Path::new(UNIT), Path::new(WANTS))?;
    events.output(label, &format!("{} first-boot script(s) installed ({UNIT})", p.scripts.len()));
    Ok(())
}
