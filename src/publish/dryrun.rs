//! `--dry-run`: the publish's planned calls (`plan.rs`), the ones the real run executes, one
//! JSON object per line on stdout. No credentials are loaded and nothing is sent. Blocks are
//! read and decided by the upload's own code, so the PutSnapshotBlock lines are the real list.

use std::io::Write;
use std::time::Instant;

use super::plan::{self, Call, PutBlocks, Start, Sum};
use super::prepare::Prepared;
use super::{snapshot, upload};

/// The home region as the real run would find it, or a placeholder.
fn home_region(p: &Prepared) -> String {
    p.settings
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "(the AWS config's region)".into())
}

fn emit(out: &mut impl Write, call: &Call) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_value(call)?)?;
    Ok(())
}

/// One PutSnapshotBlock line per block the upload would send; returns their digests.
fn put_each(out: &mut impl Write, p: &Prepared, put: &PutBlocks) -> anyhow::Result<Vec<[u8; 32]>> {
    let job = snapshot::job(p, "", Default::default(), Instant::now());
    let mut digests = Vec::new();
    for &b in &p.candidates {
        if let Some((_, d)) = upload::read_and_decide(&job, b)? {
            emit(out, &put.one(b, &d))?;
            digests.push(d);
        }
    }
    Ok(digests)
}

/// Prints the calls: the look-up by name, then the plan of a new AMI (what the real run does
/// when the look-up finds none).
pub fn print(p: &Prepared) -> anyhow::Result<()> {
    let region = home_region(p);
    let plan = plan::build(p, &region, Start::New)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    emit(&mut out, &Call::FindImage(plan::lookup(p, &region)))?;
    let mut digests = Vec::new();
    for call in plan.home.iter().chain(plan.copies.iter().flat_map(|r| &r.calls)) {
        match call {
            Call::PutBlocks(put) => digests = put_each(&mut out, p, put)?,
            Call::CompleteSnapshot(c) => emit(&mut out, &c.with(Sum::of(digests.iter())?))?,
            other => emit(&mut out, other)?,
        }
    }
    out.flush()?;
    Ok(())
}
