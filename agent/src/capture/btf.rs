//! Kernel structure offsets from the running kernel's BTF.
//!
//! aya has no CO-RE field relocations for programs written in Rust, so the
//! few `task_struct`, `mm_struct` and `linux_binprm` offsets the programs need
//! are looked up here, by name, and handed to them as a global. Members that
//! sit inside anonymous structs or unions (`mm_struct` wraps most of its
//! fields in one) are found through them.
//!
//! This is a small, bounded reader of the BTF format (types and strings
//! sections, one pass) rather than a general BTF crate: those build the whole
//! type graph, tens of MB for vmlinux, which would be the daemon's peak
//! memory. Here the peak is the 5–6 MB file plus one index entry per type.

use std::path::Path;

use agent_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("kernel BTF is malformed: {what}")]
    Malformed { what: &'static str },
    #[error("kernel BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

/// An indexed BTF blob: where each type's record starts.
pub struct BtfIndex {
    data: Vec<u8>,
    types_at: usize,
    types_len: usize,
    strs_at: usize,
    strs_len: usize,
    /// Byte offset (in the types section) of type id `i + 1`.
    offsets: Vec<u32>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

impl BtfIndex {
    pub fn parse(data: Vec<u8>) -> Result<Self, BtfError> {
        let bad = |what| BtfError::Malformed { what };
        let magic = data.get(0..2).map(|m| u16::from_le_bytes([m[0], m[1]]));
        if magic != Some(BTF_MAGIC) {
            return Err(bad("magic (big-endian BTF is not supported)"));
        }
        let hdr_len = u32_at(&data, 4).ok_or_else(|| bad("header"))? as usize;
        let field = |i: usize| {
            u32_at(&data, 8 + 4 * i)
                .map(|v| v as usize)
                .ok_or_else(|| bad("header"))
        };
        let (type_off, type_len, str_off, str_len) = (field(0)?, field(1)?, field(2)?, field(3)?);
        let types_at = hdr_len
            .checked_add(type_off)
            .ok_or_else(|| bad("type section"))?;
        let strs_at = hdr_len
            .checked_add(str_off)
            .ok_or_else(|| bad("string section"))?;
        if types_at
            .checked_add(type_len)
            .is_none_or(|e| e > data.len())
            || strs_at.checked_add(str_len).is_none_or(|e| e > data.len())
        {
            return Err(bad("section bounds"));
        }
        let mut offsets = Vec::new();
        let mut at = 0usize;
        let types = &data[types_at..types_at + type_len];
        while at + 12 <= types.len() {
            offsets.push(u32::try_from(at).map_err(|_| bad("type section too large"))?);
            let info = u32_at(types, at + 4).ok_or_else(|| bad("type"))?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                _ => 0,
            };
            at += 12 + extra;
        }
        if at != types.len() {
            return Err(bad("type section does not end on a type"));
        }
        Ok(Self {
            data,
            types_at,
            types_len: type_len,
            strs_at,
            strs_len: str_len,
            offsets,
        })
    }

    fn types(&self) -> &[u8] {
        &self.data[self.types_at..self.types_at + self.types_len]
    }

    fn name(&self, off: u32) -> &[u8] {
        let strs = &self.data[self.strs_at..self.strs_at + self.strs_len];
        let Some(s) = strs.get(off as usize..) else {
            return b"";
        };
        let end = memchr::memchr(0, s).unwrap_or(s.len());
        &s[..end]
    }

    /// (`name_off`, kind, vlen, record offset) of a type id.
    fn ty(&self, id: u32) -> Option<(u32, u32, usize, usize)> {
        let at = *self.offsets.get((id as usize).checked_sub(1)?)? as usize;
        let t = self.types();
        let info = u32_at(t, at + 4)?;
        Some((
            u32_at(t, at)?,
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            at,
        ))
    }

    /// Follows typedefs and qualifiers (const, volatile, restrict, type
    /// tags) to the type they name.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, kind, _, at) = self.ty(id)?;
            // typedef 8, volatile 9, const 10, restrict 11, type_tag 18
            if matches!(kind, 8..=11 | 18) {
                id = u32_at(self.types(), at + 8)?;
            } else {
                return Some(id);
            }
        }
        None
    }

    /// Byte offset of `member` in `struct strukt` (bitfields excluded).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let mut found_struct = false;
        for id in 1..=u32::try_from(self.offsets.len()).unwrap_or(0) {
            let Some((name, kind, _, _)) = self.ty(id) else {
                continue;
            };
            if kind != KIND_STRUCT || self.name(name) != strukt.as_bytes() {
                continue;
            }
            found_struct = true;
            if let Some(bits) = self.find_member(id, member.as_bytes(), 0, 0) {
                return Ok(bits / 8);
            }
        }
        if found_struct {
            Err(BtfError::NoMember {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
            })
        } else {
            Err(BtfError::NoStruct {
                name: strukt.to_owned(),
            })
        }
    }

    fn find_member(&self, id: u32, member: &[u8], base_bits: u32, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        let (_, kind, vlen, at) = self.ty(id)?;
        if kind != KIND_STRUCT && kind != KIND_UNION {
            return None;
        }
        let kflag = u32_at(self.types(), at + 4)? >> 31;
        for i in 0..vlen {
            let m = at + 12 + 12 * i;
            let (name, ty, off) = (
                u32_at(self.types(), m)?,
                u32_at(self.types(), m + 4)?,
                u32_at(self.types(), m + 8)?,
            );
            // With kind_flag set, the top 8 bits hold a bitfield size.
            let bits = if kflag == 1 { off & 0x00ff_ffff } else { off };
            let n = self.name(name);
            if n == member {
                return Some(base_bits + bits);
            }
            if n.is_empty() {
                let inner = self.resolve(ty)?;
                if let Some(found) = self.find_member(inner, member, base_bits + bits, depth + 1) {
                    return Some(found);
                }
            }
        }
        None
    }
}

pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let data = std::fs::read(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let btf = BtfIndex::parse(data)?;
    Ok(KernelOffsets {
        task_pid: btf.member_offset("task_struct", "pid")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_real_parent: btf.member_offset("task_struct", "real_parent")?,
        task_mm: btf.member_offset("task_struct", "mm")?,
        mm_arg_start: btf.member_offset("mm_struct", "arg_start")?,
        mm_arg_end: btf.member_offset("mm_struct", "arg_end")?,
        bprm_filename: btf.member_offset("linux_binprm", "filename")?,
        task_exit_code: btf.member_offset("task_struct", "exit_code")?,
        sock_dport: btf.member_offset("sock_common", "skc_dport")?,
        sock_family: btf.member_offset("sock_common", "skc_family")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_running_kernel() {
        let off = kernel_offsets(Path::new(VMLINUX_BTF))
            .expect("offsets from /sys/kernel/btf/vmlinux (the daemon needs a kernel with BTF)");
        assert!(off.task_tgid > 0 && off.task_pid > 0);
        assert_eq!(off.task_tgid, off.task_pid + 4, "pid and tgid are adjacent");
        assert_eq!(off.mm_arg_end, off.mm_arg_start + 8);
        assert!(off.bprm_filename > 0);
        assert!(off.task_exit_code > 0);
        // `skc_dport` and `skc_num` share `skc_portpair`, after the
        // address pair and the hash; `skc_family` follows.
        assert_eq!(off.sock_dport, 12);
        assert_eq!(off.sock_family, 16);
    }

    #[test]
    fn malformed_blobs_are_errors() {
        assert!(BtfIndex::parse(Vec::new()).is_err());
        assert!(BtfIndex::parse(vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        let mut b = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        b.extend_from_slice(&[0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert!(BtfIndex::parse(b).is_err());
    }

    proptest::proptest! {
        #[test]
        fn parse_is_total(mut bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if bytes.len() >= 2 {
                bytes[0] = 0x9f;
                bytes[1] = 0xeb;
            }
            if let Ok(idx) = BtfIndex::parse(bytes) {
                let _ = idx.member_offset("task_struct", "pid");
            }
        }
    }
}
