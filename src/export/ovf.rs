//! OVF 1.0 envelope for a single-disk VM (the descriptor inside an OVA).
//!
//! The output is deterministic (no timestamps, no random ids). Hardware family (`vmx-NN`, the
//! `VirtualSystemType`) versus the oldest ESXi that runs it:
//!
//! | vmx | ESXi          |
//! |-----|---------------|
//! | 10  | 5.5           |
//! | 11  | 6.0           |
//! | 13  | 6.5 (default) |
//! | 14  | 6.7           |
//! | 15  | 6.7 U2        |
//! | 17  | 7.0           |
//! | 18  | 7.0 U1        |
//! | 19  | 7.0 U2        |
//! | 20  | 8.0           |
//! | 21  | 8.0 U2        |
//!
//! An OVA with a newer family than the target host is rejected at import ("Unsupported hardware
//! family"), so the default is the conservative `vmx-13`.

use std::io;
use std::str::FromStr;

use super::vmdk::Adapter;

/// Default hardware family: ESXi 6.5 and later.
pub const DEFAULT_HARDWARE_VERSION: &str = "vmx-13";

/// Format URI of a streamOptimized VMDK in `Disk/@ovf:format`.
pub const VMDK_STREAM_FORMAT: &str = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized";

/// Name of the single logical network the NIC connects to.
pub const NETWORK_NAME: &str = "VM Network";

/// Boot firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Firmware {
    /// Legacy BIOS (no `vmw:Config` line).
    #[default]
    Bios,
    /// UEFI: adds `<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>`.
    Efi,
}

impl FromStr for Firmware {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Self> {
        match s {
            "bios" => Ok(Firmware::Bios),
            "efi" | "uefi" => Ok(Firmware::Efi),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown firmware {s:?} (expected bios or efi)"))),
        }
    }
}

/// Guest operating system family, for `OperatingSystemSection`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Os {
    /// Debian 64-bit: CIM id 96, `debian10_64Guest`.
    Debian,
    /// Ubuntu 64-bit: CIM id 94, `ubuntu64Guest`.
    Ubuntu,
    /// Any other 64-bit Linux: CIM id 101, `other4xLinux64Guest`.
    #[default]
    Other,
}

impl Os {
    /// `(CIM OSType id, vmw:osType)`.
    pub fn ids(self) -> (u32, &'static str) {
        match self {
            Os::Debian => (96, "debian10_64Guest"),
            Os::Ubuntu => (94, "ubuntu64Guest"),
            Os::Other => (101, "other4xLinux64Guest"),
        }
    }
}

impl FromStr for Os {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Self> {
        match s {
            "debian" => Ok(Os::Debian),
            "ubuntu" => Ok(Os::Ubuntu),
            "other" | "linux" => Ok(Os::Other),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("unknown guest OS {s:?} (expected debian, ubuntu or other)"))),
        }
    }
}

/// Everything the envelope says.
#[derive(Debug, Clone)]
pub struct OvfParams {
    /// VM name (`VirtualSystem/@ovf:id`, `Name`).
    pub name: String,
    /// Tar member name of the disk (`File/@ovf:href`).
    pub vmdk_file_name: String,
    /// Exact byte length of the VMDK member (`File/@ovf:size`).
    pub vmdk_file_size: u64,
    /// Virtual disk size in bytes (`Disk/@ovf:capacity`, units `byte`).
    pub capacity: u64,
    /// Disk controller.
    pub adapter: Adapter,
    /// `VirtualSystemType`, `vmx-NN` (see the module table).
    pub hardware_version: String,
    /// Virtual CPUs.
    pub cpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Boot firmware.
    pub firmware: Firmware,
    /// Guest OS.
    pub os: Os,
}

/// Checks that `v` is `vmx-` followed by decimal digits and returns the number.
pub fn check_hardware_version(v: &str) -> io::Result<u32> {
    v.strip_prefix("vmx-").filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).and_then(|d| d.parse().ok()).ok_or_else(
        || io::Error::new(io::ErrorKind::InvalidInput, format!("hardware version {v:?} is not vmx-NN (e.g. {DEFAULT_HARDWARE_VERSION})")),
    )
}

/// Escapes text for XML content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c => o.push(c),
        }
    }
    o
}

/// Renders the OVF 1.0 envelope. Items: CPU (InstanceID 1), memory (2), the disk controller (3:
/// SCSI `lsilogic` / `VirtualSCSI`, or IDE), the disk (4, Parent 3), a VmxNet3 NIC (5) on
/// [`NETWORK_NAME`]. rasd children are in alphabetical order. Call [`check_hardware_version`]
/// first; this function does not validate.
///
/// Over 80 lines on purpose: it is one XML template written out in document order, so a reader
/// can compare it with the OVF it produces; splitting it would scatter the document.
pub fn render(p: &OvfParams) -> String {
    let name = xml_escape(&p.name);
    let href = xml_escape(&p.vmdk_file_name);
    let hw = xml_escape(&p.hardware_version);
    let (os_id, os_type) = p.os.ids();
    let controller = match p.adapter {
        Adapter::Ide => "      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>IDE Controller</rasd:Description>
        <rasd:ElementName>IDE Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceType>5</rasd:ResourceType>
      </Item>
"
        .to_string(),
        Adapter::LsiLogic | Adapter::PvScsi => format!(
            "      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>{}</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
",
            if p.adapter == Adapter::PvScsi { "VirtualSCSI" } else { "lsilogic" }
        ),
    };
    let firmware = match p.firmware {
        Firmware::Efi => "      <vmw:Config ovf:required=\"false\" vmw:key=\"firmware\" vmw:value=\"efi\"/>\n",
        Firmware::Bios => "",
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1" xmlns:cim="http://schemas.dmtf.org/wbem/wscim/1/common" xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData" xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData" xmlns:vmw="http://www.vmware.com/schema/ovf" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <References>
    <File ovf:href="{href}" ovf:id="file1" ovf:size="{size}"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:capacity="{capacity}" ovf:capacityAllocationUnits="byte" ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:format="{VMDK_STREAM_FORMAT}"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="{NETWORK_NAME}">
      <Description>The {NETWORK_NAME} network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="{name}">
    <Info>A virtual machine</Info>
    <Name>{name}</Name>
    <OperatingSystemSection ovf:id="{os_id}" vmw:osType="{os_type}">
      <Info>The kind of installed guest operating system</Info>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>{name}</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>{hw}</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>{cpus} virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>{cpus}</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>{mem}MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>{mem}</rasd:VirtualQuantity>
      </Item>
{controller}      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>{NETWORK_NAME}</rasd:Connection>
        <rasd:Description>VmxNet3 ethernet adapter on "{NETWORK_NAME}"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>VmxNet3</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
{firmware}    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
"#,
        size = p.vmdk_file_size,
        capacity = p.capacity,
        cpus = p.cpus,
        mem = p.memory_mib,
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn params() -> OvfParams {
        OvfParams {
            name: "web & <db>".into(),
            vmdk_file_name: "web-disk1.vmdk".into(),
            vmdk_file_size: 12345,
            capacity: 2 << 30,
            adapter: Adapter::LsiLogic,
            hardware_version: DEFAULT_HARDWARE_VERSION.into(),
            cpus: 2,
            memory_mib: 2048,
            firmware: Firmware::Bios,
            os: Os::Other,
        }
    }

    fn parses_as_xml(text: &str) {
        let d = tempfile::tempdir_in("/tmp").unwrap();
        let p = d.path().join("x.ovf");
        std::fs::write(&p, text).unwrap();
        let o = std::process::Command::new("python3")
            .args(["-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.argv[1])"])
            .arg(&p)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }

    #[test]
    fn render_is_deterministic_valid_and_escaped() {
        let p = params();
        let a = render(&p);
        assert_eq!(a, render(&p));
        parses_as_xml(&a);
        assert!(a.contains("<Name>web &amp; &lt;db&gt;</Name>"));
        assert!(a.contains(r#"<File ovf:href="web-disk1.vmdk" ovf:id="file1" ovf:size="12345"/>"#));
        assert!(a.contains(r#"ovf:capacity="2147483648" ovf:capacityAllocationUnits="byte""#));
        assert!(a.contains("<vssd:VirtualSystemType>vmx-13</vssd:VirtualSystemType>"));
        assert!(a.contains(r#"<OperatingSystemSection ovf:id="101" vmw:osType="other4xLinux64Guest">"#));
        assert!(a.contains("<rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>\n        <rasd:ResourceType>6</rasd:ResourceType>"));
        assert!(!a.contains("vmw:Config"));
        assert!(a.ends_with("</Envelope>\n"));

        let e = render(&OvfParams { adapter: Adapter::PvScsi, firmware: Firmware::Efi, os: Os::Debian, ..params() });
        parses_as_xml(&e);
        assert!(e.contains("<rasd:ResourceSubType>VirtualSCSI</rasd:ResourceSubType>"));
        assert!(e.contains(r#"<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="efi"/>"#));
        assert!(e.contains(r#"ovf:id="96" vmw:osType="debian10_64Guest""#));
        let i = render(&OvfParams { adapter: Adapter::Ide, ..params() });
        parses_as_xml(&i);
        assert!(i.contains("<rasd:ResourceType>5</rasd:ResourceType>") && !i.contains("<rasd:ResourceType>6</rasd:ResourceType>"));
    }

    #[test]
    fn hardware_version_validation() {
        assert_eq!(check_hardware_version("vmx-13").unwrap(), 13);
        assert_eq!(check_hardware_version("vmx-21").unwrap(), 21);
        for bad in ["vmx-", "vmx13", "virtualbox-2.2", "vmx-1a", "vmx--3", " vmx-13", "vmx-13 "] {
            assert!(check_hardware_version(bad).is_err(), "{bad}");
        }
        assert_eq!("efi".parse::<Firmware>().unwrap(), Firmware::Efi);
        assert_eq!("ubuntu".parse::<Os>().unwrap(), Os::Ubuntu);
    }
}
