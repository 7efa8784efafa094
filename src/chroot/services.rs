//! The services contract of an image build: nothing starts, every request to start is recorded.
//!
//! Live-server code starts and restarts services (`systemctl restart`, `service X start`,
//! `invoke-rc.d`, Ansible's `service`/`systemd` with `state: started` and its handlers, Salt's
//! `service.running` with `watch`, Puppet's `ensure => running`). In an image build these
//! succeed without starting anything: `systemctl` is a shim (this file's `SYSTEMCTL_SHIM`,
//! bind-mounted over the image's for each sandboxed command) that records the request, answers
//! later status queries as if the unit were running, and hands every other verb (enable,
//! disable, mask, is-enabled, daemon-reload…) to the image's own systemctl, offline.
//! `service` and the LSB init scripts end in `systemctl` once `/run/systemd/system` exists;
//! `invoke-rc.d` and package maintainer scripts ask `policy-rc.d`, which records and refuses.
//! After provisioning, the log says what the image's first boot will have to start.

use std::collections::BTreeMap;
use std::path::Path;

use super::resolve::{ResolveError, Root};
use super::run::RUN_DIR;

/// Where the image's own systemctl is bind-mounted while the shim covers it.
pub fn real_systemctl() -> String {
    format!("{RUN_DIR}/systemctl.real")
}

/// The log of deferred requests (one `<action> <unit> <via>` per line).
pub fn log_path() -> String {
    format!("{RUN_DIR}/services.log")
}

/// Units the shim reports as running.
pub fn state_dir() -> String {
    format!("{RUN_DIR}/services")
}

/// The image's systemctl, covered by the shim.
pub const SYSTEMCTL: &str = "/usr/bin/systemctl";

/// The shim (POSIX sh, run by the image's /bin/sh).
pub const SYSTEMCTL_SHIM: &str = r#"#!/bin/sh
# systemctl during an imgforge image build, for the build only (the image's own systemctl is
# at /run/imgforge/systemctl.real). Nothing starts in a build: start, restart, reload and the
# like are recorded, deferred to the image's first boot, and the unit then reads as running for
# the rest of the build. Every other verb runs the image's systemctl offline.
real=/run/imgforge/systemctl.real
log=/run/imgforge/services.log
state=/run/imgforge/services
SYSTEMD_OFFLINE=1
export SYSTEMD_OFFLINE
case "${0##*/}" in
    reboot|poweroff|halt|shutdown|kexec)
        echo "imgforge: ${0##*/}: refused: an image build does not reboot or power off (the image boots later)" >&2
        exit 1 ;;
esac
verb= now= props= units= skip=
for a in "$@"; do
    if [ -n "$skip" ]; then
        [ "$skip" = p ] && props="$props,$a"
        skip=; continue
    fi
    case "$a" in
        --now) now=1 ;;
        --property=*) props="$props,${a#--property=}" ;;
        -p|--property) skip=p ;;
        -p*) props="$props,${a#-p}" ;;
        -t|--type|--state|-H|--host|-M|--machine|--root|-o|--output|-n|--lines|-s|--signal|--kill-whom|--job-mode|--what|--image|--boot-loader-entry) skip=1 ;;
        --) ;;
        -*) ;;
        *) if [ -z "$verb" ]; then verb=$a; else
               case "$a" in *.*) units="$units $a" ;; *) units="$units $a.service" ;; esac
           fi ;;
    esac
done
enabled() { "$real" is-enabled "$1" 2>/dev/null | head -n 1; }
case "$verb" in
    start|restart|reload|try-restart|reload-or-restart|try-reload-or-restart|force-reload|condrestart|condreload|reload-or-try-restart)
        for u in $units; do
            echo "$verb $u systemctl" >> "$log"
            : > "$state/$u"
            echo "imgforge: $u: $verb deferred to first boot (nothing starts in an image build)" >&2
        done
        exit 0 ;;
    stop|kill|condstop)
        for u in $units; do rm -f "$state/$u"; done
        exit 0 ;;
    is-active)
        rc=3
        for u in $units; do
            if [ -e "$state/$u" ]; then echo active; rc=0; else echo inactive; fi
        done
        exit $rc ;;
    is-failed)
        for u in $units; do echo inactive; done
        exit 1 ;;
    is-system-running)
        case " $* " in *" --quiet "*|*" -q "*) ;; *) echo offline ;; esac
        exit 1 ;;
    status)
        rc=0
        for u in $units; do
            if [ -e "$state/$u" ]; then
                printf '* %s\n     Loaded: loaded\n     Active: active (running) (imgforge build: start deferred to first boot)\n' "$u"
            elif [ -z "$(enabled "$u")" ]; then
                echo "Unit $u could not be found." >&2; rc=4
            else
                printf '* %s\n     Loaded: loaded\n     Active: inactive (dead)\n' "$u"; [ $rc = 0 ] && rc=3
            fi
        done
        exit $rc ;;
    show)
        first=1
        for u in $units; do
            st=$(enabled "$u")
            case "$st" in "") load=not-found ;; masked*) load=masked ;; *) load=loaded ;; esac
            if [ -e "$state/$u" ]; then active=active sub=running; else active=inactive sub=dead; fi
            [ -n "$first" ] || echo
            first=
            for kv in "Id=$u" "Names=$u" "LoadState=$load" "ActiveState=$active" "SubState=$sub" "UnitFileState=$st" "NeedDaemonReload=no"; do
                if [ -z "$props" ]; then echo "$kv"; else
                    case ",$props," in *",${kv%%=*},"*) echo "$kv" ;; esac
                fi
            done
        done
        exit 0 ;;
esac
for a in "$@"; do
    shift
    [ "$a" = --now ] || set -- "$@" "$a"
done
"$real" "$@"
rc=$?
if [ -n "$now" ] && [ $rc = 0 ]; then
    case "$verb" in
        enable|reenable) for u in $units; do echo "start $u systemctl" >> "$log"; : > "$state/$u"; done ;;
        disable|mask) for u in $units; do rm -f "$state/$u"; done ;;
    esac
fi
exit $rc
"#;

/// The policy-rc.d for the build: records start-like requests and refuses them (exit 101 is
/// Debian's invoke-rc.d contract for "forbidden by policy").
pub const POLICY_RC_D: &[u8] = br#"#!/bin/sh
# Installed by imgforge for the build only: daemons do not start in an image build. Start-like
# requests are recorded (deferred to the image's first boot) and refused.
while [ $# -gt 0 ]; do
    case "$1" in --list) exit 101 ;; -*) shift ;; *) break ;; esac
done
unit=$1
case "$unit" in *.*) ;; *) unit=$unit.service ;; esac
for action in $2; do
    case "$action" in
        start|restart|reload|force-reload|try-restart)
            echo "$action $unit invoke-rc.d" >> /run/imgforge/services.log 2>/dev/null
            break ;;
    esac
done
exit 101
"#;

/// One unit whose start the build deferred to first boot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct Deferred {
    /// The unit (`nginx.service`).
    pub unit: String,
    /// What was asked, in order, without repeats (`start`, `restart`…).
    pub actions: Vec<String>,
    /// Who asked: `systemctl` (also `service`, init scripts, Ansible, Salt, Puppet) or
    /// `invoke-rc.d` (also package maintainer scripts).
    pub via: Vec<String>,
    /// `systemctl is-enabled` in the image after provisioning (`enabled`, `disabled`, `masked`,
    /// `static`, `not-found`…).
    pub enabled: String,
}

impl Deferred {
    /// Whether the unit will run when the image boots (it is enabled, or pulled in by others).
    pub fn runs_at_boot(&self) -> bool {
        matches!(self.enabled.as_str(), "enabled" | "enabled-runtime" | "static" | "indirect" | "generated" | "alias" | "linked")
    }
}

/// The deferred requests in the log text, by unit (enabled state left empty). Pure.
pub fn parse_log(text: &str) -> Vec<Deferred> {
    let mut by_unit: BTreeMap<String, Deferred> = BTreeMap::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(action), Some(unit)) = (f.next(), f.next()) else { continue };
        let via = f.next().unwrap_or("systemctl");
        let d = by_unit.entry(unit.to_string()).or_insert_with(|| Deferred {
            unit: unit.to_string(),
            actions: Vec::new(),
            via: Vec::new(),
            enabled: String::new(),
        });
        if !d.actions.iter().any(|a| a == action) {
            d.actions.push(action.to_string());
        }
        if !d.via.iter().any(|v| v == via) {
            d.via.push(via.to_string());
        }
    }
    by_unit.into_values().collect()
}

/// Reads the log from the image's /run.
pub fn read_log(root: &Root) -> Result<Vec<Deferred>, ResolveError> {
    let text = root.read(Path::new(&log_path()))?.unwrap_or_default();
    Ok(parse_log(&String::from_utf8_lossy(&text)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_groups_by_unit_in_order() {
        let log = "start nginx.service invoke-rc.d\nrestart nginx.service systemctl\nstart nginx.service systemctl\nreload ssh.service systemctl\n";
        let d = parse_log(log);
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].unit, "nginx.service");
        assert_eq!(d[0].actions, ["start", "restart"]);
        assert_eq!(d[0].via, ["invoke-rc.d", "systemctl"]);
        assert_eq!(d[1].unit, "ssh.service");
        let mut e = d[1].clone();
        e.enabled = "disabled".into();
        assert!(!e.runs_at_boot());
        e.enabled = "enabled".into();
        assert!(e.runs_at_boot());
    }
}
