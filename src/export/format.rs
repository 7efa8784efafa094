//! The output formats, their file names and their size limits.

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Format {
    /// Sparse raw disk (AWS import, EBS direct upload).
    Raw,
    /// qcow2 v3, 64 KiB clusters (KVM, OpenStack).
    Qcow2,
    /// Fixed VHD with Azure's rules (whole-MiB virtual size + footer).
    Vhd,
    /// Dynamic VHD (Hyper-V, VirtualBox; Azure refuses it).
    VhdDynamic,
    /// streamOptimized VMDK (vSphere upload, OVA member).
    Vmdk,
    /// OVA: OVF 1.0 + manifest + streamOptimized VMDK in a tar (VMware, VirtualBox).
    Ova,
}

impl Format {
    /// Every format, in the order outputs are written.
    pub const ALL: [Format; 6] = [Format::Raw, Format::Vhd, Format::Qcow2, Format::VhdDynamic, Format::Vmdk, Format::Ova];

    /// The name used on the command line, in recipes and in the manifest.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Qcow2 => "qcow2",
            Self::Vhd => "vhd",
            Self::VhdDynamic => "vhd-dynamic",
            Self::Vmdk => "vmdk",
            Self::Ova => "ova",
        }
    }

    /// Parses a name as written by [`Format::name`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == s)
    }

    /// The output file name for image `name`.
    pub fn file_name(self, name: &str) -> String {
        match self {
            Self::Raw => format!("{name}.raw"),
            Self::Qcow2 => format!("{name}.qcow2"),
            Self::Vhd => format!("{name}.vhd"),
            Self::VhdDynamic => format!("{name}.dynamic.vhd"),
            Self::Vmdk => format!("{name}.vmdk"),
            Self::Ova => format!("{name}.ova"),
        }
    }

    /// The largest raw disk this format can carry, and why.
    pub fn limit(self) -> (u64, &'static str) {
        match self {
            Self::Raw => (u64::MAX, ""),
            Self::Qcow2 => (super::qcow2::MAX_SIZE, "the qcow2 writer's limit"),
            Self::Vhd | Self::VhdDynamic => (super::vhd::MAX_SIZE, "VHD's limit (2040 GiB)"),
            Self::Vmdk | Self::Ova => (super::vmdk::MAX_SIZE, "a streamOptimized VMDK addresses sectors with 32 bits"),
        }
    }

    /// Whether the writer needs the content digest before it writes its first byte.
    pub fn needs_ids_first(self) -> bool {
        matches!(self, Self::VhdDynamic | Self::Vmdk | Self::Ova)
    }

    /// Whether the bytes are the raw disk's own (copied by the kernel, extent by extent).
    pub fn is_copy(self) -> bool {
        matches!(self, Self::Raw | Self::Vhd)
    }
}

/// Comma-separated names of every format.
pub fn names() -> String {
    Format::ALL.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}
