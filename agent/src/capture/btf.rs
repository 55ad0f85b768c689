//! Kernel structure offsets from the running kernel's BTF.
//!
//! aya has no CO-RE field relocations for programs written in Rust, so the
//! few `task_struct`, `mm_struct` and `linux_binprm` offsets the programs need
//! are looked up here, by name, and handed to them as a global. Members that
//! sit inside anonymous structs or unions (`mm_struct` wraps most of its
//! fields in one) are found through them.

use std::path::Path;

use agent_common::KernelOffsets;
use btf_rs::{Btf, Type};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}")]
    Read {
        path: String,
        #[source]
        source: anyhow::Error,
    },
    #[error("kernel BTF has no struct {name}")]
    NoStruct { name: String },
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

pub fn kernel_offsets(path: &Path) -> Result<KernelOffsets, BtfError> {
    let btf = Btf::from_file(path).map_err(|source| BtfError::Read {
        path: path.display().to_string(),
        source,
    })?;
    Ok(KernelOffsets {
        task_pid: member_offset(&btf, "task_struct", "pid")?,
        task_tgid: member_offset(&btf, "task_struct", "tgid")?,
        task_real_parent: member_offset(&btf, "task_struct", "real_parent")?,
        task_mm: member_offset(&btf, "task_struct", "mm")?,
        mm_arg_start: member_offset(&btf, "mm_struct", "arg_start")?,
        mm_arg_end: member_offset(&btf, "mm_struct", "arg_end")?,
        bprm_filename: member_offset(&btf, "linux_binprm", "filename")?,
        task_exit_code: member_offset(&btf, "task_struct", "exit_code")?,
    })
}

/// Byte offset of `member` in `struct strukt`.
fn member_offset(btf: &Btf, strukt: &str, member: &str) -> Result<u32, BtfError> {
    let types = btf
        .resolve_types_by_name(strukt)
        .map_err(|_| BtfError::NoStruct {
            name: strukt.to_owned(),
        })?;
    for ty in types {
        if let Type::Struct(s) = ty {
            if let Some(bits) = find_member(btf, &s, member, 0) {
                return Ok(bits / 8);
            }
        }
    }
    Err(BtfError::NoMember {
        strukt: strukt.to_owned(),
        member: member.to_owned(),
    })
}

/// Searches `s` for `member`, descending into anonymous struct/union members.
fn find_member(btf: &Btf, s: &btf_rs::Struct, member: &str, base_bits: u32) -> Option<u32> {
    for m in &s.members {
        let name = btf.resolve_name(m).unwrap_or_default();
        if name == member {
            return Some(base_bits + m.bit_offset());
        }
        if name.is_empty() {
            if let Ok(Type::Struct(inner) | Type::Union(inner)) = btf.resolve_chained_type(m) {
                if let Some(off) = find_member(btf, &inner, member, base_bits + m.bit_offset()) {
                    return Some(off);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_of_running_kernel() {
        let path = Path::new(VMLINUX_BTF);
        if !path.exists() {
            // A kernel without BTF cannot run the daemon at all; the
            // privileged tests cover that case with a clear error.
            eprintln!("no {VMLINUX_BTF}: nothing to check on this machine");
            return;
        }
        let off = kernel_offsets(path).expect("offsets");
        assert!(off.task_tgid > 0 && off.task_pid > 0);
        assert_eq!(off.task_tgid, off.task_pid + 4, "pid and tgid are adjacent");
        assert_eq!(off.mm_arg_end, off.mm_arg_start + 8);
        assert!(off.bprm_filename > 0);
    }
}
