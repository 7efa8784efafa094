//! The seal report (`<name>.seal.json`): every change by operation, every residue finding
//! with its severity; a summary for the manifest; the dry-run plan as text.

use std::collections::BTreeMap;

use anyhow::bail;

use super::catalog::Op;
use super::plan::SealPlan;
use super::residue::{Finding, Scan};
use super::scrub::{Action, ActionKind};

/// How a residue finding counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// Fails the seal.
    Error,
    /// Downgraded by the recipe.
    Warning,
}

/// A finding with its severity.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reported {
    /// The finding.
    #[serde(flatten)]
    pub finding: Finding,
    /// Error or warning.
    pub severity: Severity,
}

/// The residue scan's part of the report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Residue {
    /// Files read.
    pub files: u64,
    /// Bytes read.
    pub bytes: u64,
    /// What was found.
    pub findings: Vec<Reported>,
    /// What the scan skipped and why.
    pub notes: Vec<String>,
}

/// Everything a seal run did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SealReport {
    /// Report format version.
    pub schema: u32,
    /// Nothing was written.
    pub dry_run: bool,
    /// Operations that ran, in order.
    pub operations: Vec<Op>,
    /// Changes, in order.
    pub actions: Vec<Action>,
    /// What regenerates SSH host keys on first boot.
    pub ssh_regenerators: Vec<String>,
    /// The residue scan.
    pub residue: Residue,
    /// Remarks.
    pub notes: Vec<String>,
    /// Files an operation kept on purpose, with the reason (`ssh-userdir`: the recipe's
    /// authorized_keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<Kept>,
    /// Filesystem UUIDs changed after unmount (`fs-uuids`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fs_uuids: Vec<super::fsuuid::UuidChange>,
    /// LVM PV and VG UUIDs changed after unmount (`lvm-uuids`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lvm_uuids: Vec<super::lvmuuid::LvmUuidChange>,
    /// Wall time.
    pub seconds: f64,
    /// What the raw pass searches the unmounted disk for: what the seal removed and no live
    /// file holds. Never serialised (it holds secret values).
    #[serde(skip)]
    pub raw_needles: super::residue::Needles,
    /// The raw pass over the unmounted disk image (free space and journals included).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_scan: Option<super::rawscan::RawScan>,
    /// How the free space of each filesystem was cleared after the seal.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub free_space: Vec<String>,
}

/// A file an operation looked at and kept on purpose.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Kept {
    /// The operation.
    pub op: Op,
    /// Path inside the image.
    pub path: String,
    /// Why it stays.
    pub reason: String,
}

/// The manifest's view of a seal run.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub struct SealSummary {
    /// The full report's file name, beside the manifest.
    pub report: String,
    /// Operations that ran.
    pub operations: Vec<Op>,
    /// Counts of changes by kind ("removed": 12, …).
    pub changes: BTreeMap<String, usize>,
    /// Residue findings that failed (always 0 in a finished build) and warnings.
    pub residue_errors: usize,
    /// Downgraded findings.
    pub residue_warnings: usize,
    /// What regenerates SSH host keys on first boot.
    pub ssh_regenerators: Vec<String>,
    /// Wall time.
    pub seconds: f64,
}

/// Builds the report; findings matching a `warn` rule become warnings.
pub fn assemble(
    plan: &SealPlan,
    actions: Vec<Action>,
    scan: Scan,
    ssh_regenerators: Vec<String>,
    notes: Vec<String>,
    dry_run: bool,
    seconds: f64,
) -> SealReport {
    let findings = scan
        .findings
        .into_iter()
        .map(|f| {
            let warn = plan.warn.iter().any(|w| w.matches(f.kind.name(), &f.path));
            Reported { finding: f, severity: if warn { Severity::Warning } else { Severity::Error } }
        })
        .collect();
    SealReport {
        schema: 1,
        dry_run,
        operations: Op::ALL.into_iter().filter(|o| plan.enabled.contains(o)).collect(),
        actions,
        ssh_regenerators,
        residue: Residue { files: scan.files, bytes: scan.bytes, findings, notes: scan.notes },
        notes,
        kept: Vec::new(),
        fs_uuids: Vec::new(),
        lvm_uuids: Vec::new(),
        seconds,
        raw_needles: Default::default(),
        raw_scan: None,
        free_space: Vec::new(),
    }
}

fn kind_name(k: ActionKind) -> &'static str {
    match k {
        ActionKind::Removed => "removed",
        ActionKind::Truncated => "truncated",
        ActionKind::Rewritten => "rewritten",
        ActionKind::Created => "created",
        ActionKind::Ran => "ran",
    }
}

impl SealReport {
    /// Findings that fail the seal.
    pub fn errors(&self) -> impl Iterator<Item = &Reported> {
        self.residue.findings.iter().filter(|f| f.severity == Severity::Error)
    }

    /// Fails when a residue finding was not downgraded, listing them (file, line, reason) and
    /// how to downgrade one. `full_list` says where the whole list is ("full list in PATH"), or
    /// that it could not be written.
    pub fn check(&self, full_list: &str) -> anyhow::Result<()> {
        let errors: Vec<&Reported> = self.errors().collect();
        if errors.is_empty() {
            return match &self.raw_scan {
                Some(raw) => raw.check().map_err(|e| anyhow::anyhow!("{e:#}\n{full_list}.")),
                None => Ok(()),
            };
        }
        let mut msg = format!("the residue scan found {} thing(s) that must not ship:", errors.len());
        for f in errors.iter().take(20) {
            msg.push_str(&format!("\n  {}: line {}: {} ({})", f.finding.path, f.finding.line, f.finding.detail, f.finding.kind.name()));
        }
        if errors.len() > 20 {
            msg.push_str(&format!("\n  … and {} more", errors.len() - 20));
        }
        msg.push_str(&format!(
            "\n{full_list}. Remove them in a provisioner, or downgrade a finding to a warning in the recipe: [seal.residue] warn = [\"KIND\" or \"KIND:/path\"]"
        ));
        bail!(msg)
    }

    /// The manifest's summary; `report` is the report's file name.
    pub fn summary(&self, report: &str) -> SealSummary {
        let mut changes = BTreeMap::new();
        for a in &self.actions {
            *changes.entry(kind_name(a.action).to_string()).or_insert(0) += 1;
        }
        SealSummary {
            report: report.to_string(),
            operations: self.operations.clone(),
            changes,
            residue_errors: self.errors().count(),
            residue_warnings: self.residue.findings.len() - self.errors().count(),
            ssh_regenerators: self.ssh_regenerators.clone(),
            seconds: self.seconds,
        }
    }

    /// The plan or result as text: one line per change, grouped by operation.
    pub fn text(&self) -> String {
        let verb = |k: ActionKind| match (self.dry_run, k) {
            (true, ActionKind::Removed) => "would remove",
            (true, ActionKind::Truncated) => "would truncate",
            (true, ActionKind::Rewritten) => "would rewrite",
            (true, ActionKind::Created) => "would create",
            (true, ActionKind::Ran) => "would run",
            (false, k) => kind_name(k),
        };
        let mut out = String::new();
        for op in &self.operations {
            let mine: Vec<&Action> = self.actions.iter().filter(|a| a.op == *op).collect();
            out.push_str(&format!(
                "{} ({})\n",
                op.name(),
                if mine.is_empty() { "nothing to do".to_string() } else { mine.len().to_string() }
            ));
            for a in mine {
                let detail = if a.detail.is_empty() { String::new() } else { format!("  # {}", a.detail) };
                out.push_str(&format!("  {} {}{detail}\n", verb(a.action), a.path));
            }
            for k in self.kept.iter().filter(|k| k.op == *op) {
                out.push_str(&format!("  {} {}  # {}\n", if self.dry_run { "would keep" } else { "kept" }, k.path, k.reason));
            }
        }
        for r in &self.ssh_regenerators {
            out.push_str(&format!("SSH host keys regenerated on first boot by {r}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        for f in &self.residue.findings {
            let sev = if f.severity == Severity::Error { "error" } else { "warning" };
            out.push_str(&format!("residue {sev}: {}: line {}: {}\n", f.finding.path, f.finding.line, f.finding.detail));
        }
        out
    }
}
