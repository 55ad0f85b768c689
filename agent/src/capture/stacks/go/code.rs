//! The machine code of a hooked Go function: is it compiled for the register
//! ABI, and where are its returns?
//!
//! Return probes on Go cannot be uretprobes: those replace the return
//! address on the goroutine's stack, which the Go runtime copies when the
//! stack grows and reads when it unwinds, and a goroutine can return on
//! another thread than it entered. So a plain uprobe goes on each `RET` of
//! the function. A uprobe placed inside an instruction would corrupt the
//! program, so the offsets are found by decoding the function (iced-x86)
//! from its entry to its end, and accepted only when the decoding is
//! consistent: every byte decodes, no instruction crosses the function's
//! end, every direct branch inside the function lands on an instruction
//! start, nothing leaves the function by a jump (a tail call would return
//! past our probes). The caller also checks, from the pclntab, that the
//! stack pointer is back at its entry value at each `RET`.

use iced_x86::{
    Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register,
};

/// A function with more returns than this is not what we expect to hook
/// (`crypto/tls.(*Conn).Write` has about ten): refuse rather than attach
/// hundreds of probes.
pub const MAX_RETURNS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodeError {
    #[error("no code")]
    Empty,
    #[error("undecodable instruction at {addr:#x}")]
    Invalid { addr: u64 },
    #[error("instruction at {addr:#x} crosses the function's end")]
    CrossesEnd { addr: u64 },
    #[error("branch at {addr:#x} lands inside an instruction at {target:#x}")]
    MisalignedTarget { addr: u64, target: u64 },
    #[error("jump at {addr:#x} leaves the function (tail call): its return would be missed")]
    TailJump { addr: u64 },
    #[error("unexpected return form at {addr:#x} ({what})")]
    OddReturn { addr: u64, what: &'static str },
    #[error("no return instruction")]
    NoReturn,
    #[error("more than {MAX_RETURNS} return instructions")]
    TooManyReturns,
    #[error(
        "no stack-bound check through R14 in the prologue: not Go's register ABI \
         (Go before 1.17 passes arguments on the stack)"
    )]
    NotRegisterAbi,
}

/// Decodes `code` (the function's bytes, loaded at `entry`) and returns the
/// addresses of its `RET` instructions.
pub fn find_returns(code: &[u8], entry: u64) -> Result<Vec<u64>, CodeError> {
    if code.is_empty() {
        return Err(CodeError::Empty);
    }
    let end = entry + code.len() as u64;
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut starts = Vec::new();
    let mut targets = Vec::new();
    let mut rets = Vec::new();
    let mut ins = Instruction::default();
    while dec.can_decode() {
        dec.decode_out(&mut ins);
        let addr = ins.ip();
        if ins.is_invalid() {
            // The decoder sees only the function's bytes: an instruction
            // cut by the end shows up as a lack of bytes.
            if dec.last_error() == DecoderError::NoMoreBytes {
                return Err(CodeError::CrossesEnd { addr });
            }
            return Err(CodeError::Invalid { addr });
        }
        if ins.next_ip() > end {
            return Err(CodeError::CrossesEnd { addr });
        }
        starts.push(addr);
        match ins.flow_control() {
            FlowControl::Return => {
                if ins.mnemonic() != Mnemonic::Ret {
                    return Err(CodeError::OddReturn {
                        addr,
                        what: "far or interrupt return",
                    });
                }
                if ins.op_count() != 0 {
                    return Err(CodeError::OddReturn {
                        addr,
                        what: "RET with an immediate",
                    });
                }
                rets.push(addr);
            }
            FlowControl::UnconditionalBranch | FlowControl::ConditionalBranch
                if is_near_branch(&ins) =>
            {
                let t = ins.near_branch_target();
                // A jump out of the function, conditional or not, is a
                // tail call.
                if !(entry..end).contains(&t) {
                    return Err(CodeError::TailJump { addr });
                }
                targets.push((addr, t));
            }
            // Indirect jumps are Go's jump tables (targets in rodata,
            // inside the function): allowed, their targets cannot be
            // checked here.
            _ => {}
        }
    }
    // `starts` is sorted: decoding goes forward.
    for (addr, t) in targets {
        if starts.binary_search(&t).is_err() {
            return Err(CodeError::MisalignedTarget { addr, target: t });
        }
    }
    if rets.is_empty() {
        return Err(CodeError::NoReturn);
    }
    if rets.len() > MAX_RETURNS {
        return Err(CodeError::TooManyReturns);
    }
    Ok(rets)
}

fn is_near_branch(ins: &Instruction) -> bool {
    matches!(
        ins.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

/// Checks that the function starts the way Go 1.17+ compiles a function
/// that may grow its stack under the register ABI: within its first
/// instructions, a compare of the stack pointer (or `RSP − frame` in a
/// scratch register) with `g.stackguard0` read through R14 (`CMP RSP,
/// [R14+0x10]`). That is also what makes R14 the goroutine pointer the
/// probes key their state by. Go 1.16 and older read `g` from thread-local
/// storage instead and pass arguments on the stack.
pub fn check_register_abi(code: &[u8], entry: u64) -> Result<(), CodeError> {
    let mut dec = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut ins = Instruction::default();
    for _ in 0..4 {
        if !dec.can_decode() {
            break;
        }
        dec.decode_out(&mut ins);
        if ins.is_invalid() {
            return Err(CodeError::Invalid { addr: ins.ip() });
        }
        if ins.mnemonic() == Mnemonic::Cmp
            && ins.op_count() == 2
            && ins.op0_kind() == OpKind::Register
            && ins.op1_kind() == OpKind::Memory
            && ins.memory_base() == Register::R14
            && ins.memory_index() == Register::None
            && ins.memory_displacement64() == 0x10
        {
            return Ok(());
        }
    }
    Err(CodeError::NotRegisterAbi)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTRY: u64 = 0x40_1000;

    // cmp rsp,[r14+0x10]; jbe +0x0c; sub rsp,0x18; add rsp,0x18; ret;
    // call morestack (rel32 0); jmp entry
    fn sample() -> Vec<u8> {
        let mut c = vec![0x49, 0x3b, 0x66, 0x10]; // cmp rsp,[r14+0x10]
        c.extend([0x76, 0x09]); // jbe -> 0x0f
        c.extend([0x48, 0x83, 0xec, 0x18]); // sub rsp,0x18
        c.extend([0x48, 0x83, 0xc4, 0x18]); // add rsp,0x18
        c.push(0xc3); // ret at 0x0e
        c.extend([0xe8, 0, 0, 0, 0]); // call (next)
        c.extend([0xeb, 0xea]); // jmp -> 0x00 (0x16 - 0x16)
        c.extend([0xcc, 0xcc]); // padding
        c
    }

    #[test]
    fn returns_of_a_go_shaped_function() {
        let c = sample();
        assert_eq!(find_returns(&c, ENTRY).unwrap(), vec![ENTRY + 0x0e]);
        check_register_abi(&c, ENTRY).unwrap();
    }

    #[test]
    fn a_branch_into_an_instruction_is_refused() {
        let mut c = sample();
        c[5] = 0x0a; // jbe -> 0x10: inside the call
        assert!(matches!(
            find_returns(&c, ENTRY),
            Err(CodeError::MisalignedTarget { .. })
        ));
    }

    #[test]
    fn a_jump_out_of_the_function_is_refused() {
        let mut c = sample();
        c[0x14] = 0xeb;
        c[0x15] = 0x7f; // jmp far past the end
        assert!(matches!(
            find_returns(&c, ENTRY),
            Err(CodeError::TailJump { .. })
        ));
    }

    #[test]
    fn an_instruction_cut_by_the_end_is_refused() {
        let c = sample();
        assert!(matches!(
            find_returns(&c[..0x12], ENTRY),
            Err(CodeError::CrossesEnd { .. })
        ));
        assert_eq!(find_returns(&[], ENTRY), Err(CodeError::Empty));
        assert_eq!(find_returns(&[0x90, 0x90], ENTRY), Err(CodeError::NoReturn));
    }

    #[test]
    fn the_stack_abi_prologue_is_refused() {
        // Go 1.16: mov rcx, fs:[-8]; cmp rsp,[rcx+0x10]
        let c = [
            0x64, 0x48, 0x8b, 0x0c, 0x25, 0xf8, 0xff, 0xff, 0xff, 0x48, 0x3b, 0x61, 0x10, 0xc3,
        ];
        assert_eq!(
            check_register_abi(&c, ENTRY),
            Err(CodeError::NotRegisterAbi)
        );
        // A big frame: lea r12,[rsp-0x1000]; cmp r12,[r14+0x10]
        let c = [
            0x4c, 0x8d, 0xa4, 0x24, 0x00, 0xf0, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10,
        ];
        check_register_abi(&c, ENTRY).unwrap();
    }
}
