//! `--dry-run`: every AWS call a publish would make, with its parameters, one JSON object per
//! line on stdout. No credentials are loaded and nothing is sent. Blocks are read and hashed
//! exactly as the upload would, so the PutSnapshotBlock lines are the real list.

use std::io::Write;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

use super::blocks::{self, BLOCK, should_send};
use super::prepare::{Prepared, Request};

fn call(out: &mut impl Write, op: &str, params: Value) -> std::io::Result<()> {
    writeln!(out, "{}", json!({ "dry_run": op, "params": params }))
}

fn read(file: &std::fs::File, size: u64, data: &[u64], block: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; BLOCK as usize];
    let off = block * BLOCK;
    if data.binary_search(&block).is_ok() && off < size {
        let len = (size - off).min(BLOCK) as usize;
        file.read_exact_at(buf.get_mut(..len).unwrap_or_default(), off)?;
    }
    Ok(buf)
}

/// Prints the calls.
pub fn print(p: &Prepared, req: &Request) -> anyhow::Result<()> {
    let region = p
        .settings
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .or_else(|| std::env::var("AWS_DEFAULT_REGION").ok())
        .unwrap_or_else(|| "(the AWS config's region)".into());
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    call(
        &mut out,
        "ec2.DescribeImages",
        json!({ "Region": region, "Owners": ["self"], "Filters": [{ "Name": "name", "Values": [p.name] }] }),
    )?;
    let mut start = json!({
        "VolumeSize": p.snapshot_gib,
        "Description": p.description,
        "ClientToken": "(new, recorded in the ledger first)",
        "Timeout": super::snapshot::timeout_minutes(p),
        "Tags": { "Name": p.name, "BuiltBy": "imgforge", "SourceDigest": p.source_digest, super::snapshot::TOKEN_TAG: "(the ClientToken)" },
    });
    if let Some(parent) = &p.parent {
        start["ParentSnapshotId"] = json!(parent.snapshot);
    }
    if p.settings.encrypted {
        start["Encrypted"] = json!(true);
        if let Some(k) = &p.settings.kms_key_id {
            start["KmsKeyArn"] = json!(k);
        }
    }
    call(&mut out, "ebs.StartSnapshot", start)?;
    let mut digests = Vec::new();
    for &b in &p.candidates {
        let buf = read(&p.input.file, p.input.size, &p.data, b)?;
        let parent = match &p.parent {
            Some(x) => Some(read(&x.file, x.size, &p.parent_data, b)?),
            None => None,
        };
        if !should_send(p.mode, &buf, parent.as_deref()) {
            continue;
        }
        let d = blocks::sha256(&buf);
        call(
            &mut out,
            "ebs.PutSnapshotBlock",
            json!({ "BlockIndex": b, "DataLength": BLOCK, "Checksum": B64.encode(d), "ChecksumAlgorithm": "SHA256" }),
        )?;
        digests.push(d);
    }
    call(
        &mut out,
        "ebs.CompleteSnapshot",
        json!({ "ChangedBlocksCount": digests.len(), "Checksum": B64.encode(blocks::linear_checksum(digests.iter())), "ChecksumAlgorithm": "SHA256", "ChecksumAggregationMethod": "LINEAR" }),
    )?;
    call(&mut out, "ec2.DescribeSnapshots", json!({ "SnapshotIds": ["(the snapshot)"], "until": "completed, 3 times in a row" }))?;
    call(&mut out, "ec2.CreateTags", json!({ "Resources": ["(the snapshot)"], "Tags": p.tags }))?;
    let r = super::registration(p, "(the snapshot)")?;
    let mut reg = json!({
        "Name": r.name, "Description": r.description, "Architecture": r.architecture, "VirtualizationType": "hvm",
        "RootDeviceName": r.root_device,
        "BlockDeviceMappings": [{ "DeviceName": r.root_device, "Ebs": { "SnapshotId": r.snapshot, "VolumeSize": r.volume_size, "VolumeType": r.volume_type, "DeleteOnTermination": true } }],
        "BootMode": r.boot_mode, "EnaSupport": r.ena,
        "TagSpecifications": [{ "ResourceType": "image", "Tags": r.tags }],
    });
    if r.sriov {
        reg["SriovNetSupport"] = json!("simple");
    }
    if r.imds_v2 {
        reg["ImdsSupport"] = json!("v2.0");
    }
    if r.tpm {
        reg["TpmSupport"] = json!("v2.0");
    }
    if r.uefi_data.is_some() {
        reg["UefiData"] = json!("(base64, from the settings)");
    }
    call(&mut out, "ec2.RegisterImage", reg)?;
    call(&mut out, "ec2.DescribeImages", json!({ "ImageIds": ["(the AMI)"], "until": "available, 3 times in a row" }))?;
    if !p.settings.launch_permissions.is_empty() {
        call(
            &mut out,
            "ec2.ModifyImageAttribute",
            json!({ "ImageId": "(the AMI)", "LaunchPermission": { "Add": p.settings.launch_permissions } }),
        )?;
        let accounts: Vec<&String> = p.settings.launch_permissions.iter().filter(|a| a.as_str() != "all").collect();
        if !accounts.is_empty() {
            call(
                &mut out,
                "ec2.ModifySnapshotAttribute",
                json!({ "SnapshotId": "(the snapshot)", "CreateVolumePermission": { "Add": accounts } }),
            )?;
        }
    }
    for dest in p.settings.copy_to_regions.iter().filter(|d| **d != region) {
        call(
            &mut out,
            "ec2.DescribeImages",
            json!({ "Region": dest, "Owners": ["self"], "Filters": [{ "Name": "name", "Values": [p.name] }] }),
        )?;
        call(
            &mut out,
            "ec2.CopyImage",
            json!({ "Region": dest, "SourceRegion": region, "SourceImageId": "(the AMI)", "Name": p.name, "CopyImageTags": true }),
        )?;
    }
    let _ = req;
    out.flush()?;
    Ok(())
}
