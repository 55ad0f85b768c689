//! One function, by recursive descent from its entry: every instruction
//! reachable through direct branches, its basic blocks, its direct calls,
//! the `OPENSSL_PUT_ERROR` sites it contains, whether it reads its first
//! three arguments, and where it writes memory.
//!
//! What stops the descent: `ret`, `int3`/`ud2`, indirect jumps (counted: a
//! jump table would hide code), direct jumps to another function (a tail
//! call: the target lies before the entry, far after it, or right after
//! int3 padding), and calls followed by int3 (calls that never return).
//! Decoding errors and instructions that overlap each other fail the
//! analysis: code reached that way is not code we understand.

use std::collections::{BTreeMap, BTreeSet};

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpAccess,
    OpKind, Register,
};

use super::{image::Image, xref};

/// Most instructions one function may have: `SSL_write` has about 100.
const MAX_INSNS: usize = 20_000;
/// How far after its entry a function's code may lie.
const MAX_SPAN: u64 = 1 << 20;
/// Straight-line instructions followed from a load of the file name to the
/// `ERR_put_error` call it feeds, and unconditional jumps on that way.
const SITE_MAX_INSNS: usize = 64;
const SITE_MAX_JUMPS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("no executable code at {0:#x}")]
    NotCode(u64),
    #[error("invalid instruction at {0:#x}")]
    Invalid(u64),
    #[error("instructions overlap at {0:#x}")]
    Overlap(u64),
    #[error("more than {MAX_INSNS} instructions")]
    TooLarge,
}

/// `ERR_put_error(lib, 0, reason, file, line)` as a call site sees it: the
/// argument registers' constant values at the call (None: not a constant
/// set on the straight path from the file name's load).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrSite {
    /// The call instruction.
    pub at: u64,
    /// The direct call target (`ERR_put_error`), if the call is direct.
    pub callee: Option<u64>,
    pub lib: Option<u64>,
    pub reason: Option<u64>,
    pub line: Option<u64>,
}

#[derive(Debug, Clone)]
struct Block {
    /// Instruction addresses, in order.
    insns: Vec<u64>,
    succs: Vec<u64>,
}

#[derive(Debug, Clone)]
pub struct Function {
    pub entry: u64,
    insns: BTreeMap<u64, Instruction>,
    blocks: BTreeMap<u64, Block>,
    /// Direct calls: (call instruction, target).
    pub calls: Vec<(u64, u64)>,
    pub indirect_jumps: u32,
    /// Error sites that name the analysed file.
    pub sites: Vec<ErrSite>,
    /// Loads of the file name that feed no readable error call: the site
    /// list may be incomplete.
    pub unresolved_loads: u32,
    /// rdi, rsi, rdx read before the function writes them (its arguments).
    pub args_read: [bool; 3],
    /// Instructions that write memory through a register other than
    /// rsp/rbp (not the stack frame).
    stores: Vec<u64>,
}

impl Function {
    pub fn instructions(&self) -> usize {
        self.insns.len()
    }

    pub fn contains(&self, at: u64) -> bool {
        self.insns.contains_key(&at)
    }

    /// The first instruction, after an optional `endbr64`.
    pub fn first(&self) -> Option<&Instruction> {
        let mut it = self.insns.values();
        let first = it.next()?;
        if first.mnemonic() == Mnemonic::Endbr64 {
            it.next()
        } else {
            Some(first)
        }
    }

    /// Whether the function opens with a frame: `push` of a register or
    /// `sub rsp, imm` as its first instruction (after `endbr64`).
    pub fn has_prologue(&self) -> bool {
        self.first().is_some_and(|i| {
            (i.mnemonic() == Mnemonic::Push && i.op0_kind() == OpKind::Register)
                || (i.mnemonic() == Mnemonic::Sub
                    && i.op0_kind() == OpKind::Register
                    && i.op0_register() == Register::RSP)
        })
    }

    /// Whether a memory write (not to the stack frame) can follow the
    /// direct call at `call_at`.
    pub fn stores_after(&self, call_at: u64) -> bool {
        let Some((&bstart, block)) = self.block_of(call_at) else {
            return false;
        };
        let after = block.insns.iter().skip_while(|&&a| a != call_at).skip(1);
        if after.clone().any(|a| self.stores.contains(a)) {
            return true;
        }
        let mut seen = BTreeSet::from([bstart]);
        let mut work: Vec<u64> = block.succs.clone();
        while let Some(b) = work.pop() {
            if !seen.insert(b) {
                continue;
            }
            let Some(blk) = self.blocks.get(&b) else {
                continue;
            };
            if blk.insns.iter().any(|a| self.stores.contains(a)) {
                return true;
            }
            work.extend(&blk.succs);
        }
        false
    }

    fn block_of(&self, at: u64) -> Option<(&u64, &Block)> {
        self.blocks
            .range(..=at)
            .next_back()
            .filter(|(_, b)| b.insns.contains(&at))
    }
}

/// Decodes the function at `entry` and reads its error sites for the file
/// names at `files`.
pub fn analyze(img: &Image<'_>, entry: u64, files: &[u64]) -> Result<Function, FlowError> {
    let mut d = Descent {
        img,
        entry,
        insns: BTreeMap::new(),
        leaders: BTreeSet::from([entry]),
        calls: Vec::new(),
        indirect_jumps: 0,
    };
    d.run()?;
    let Descent {
        insns,
        leaders,
        calls,
        indirect_jumps,
        ..
    } = d;
    let blocks = blocks(img, &insns, &leaders, entry);
    let mut f = Function {
        entry,
        insns,
        blocks,
        calls,
        indirect_jumps,
        sites: Vec::new(),
        unresolved_loads: 0,
        args_read: [false; 3],
        stores: Vec::new(),
    };
    let mut info = InstructionInfoFactory::new();
    f.stores = f
        .insns
        .iter()
        .filter(|(_, i)| writes_heap(&mut info, i))
        .map(|(a, _)| *a)
        .collect();
    f.args_read = args_read(&f, &mut info);
    read_sites(img, &mut f, files, &mut info);
    Ok(f)
}

struct Descent<'i, 'a> {
    img: &'i Image<'a>,
    entry: u64,
    insns: BTreeMap<u64, Instruction>,
    leaders: BTreeSet<u64>,
    calls: Vec<(u64, u64)>,
    indirect_jumps: u32,
}

impl Descent<'_, '_> {
    fn run(&mut self) -> Result<(), FlowError> {
        let mut work = vec![self.entry];
        while let Some(start) = work.pop() {
            let mut ip = start;
            loop {
                if self.insns.contains_key(&ip) {
                    // Runs into code decoded already: a block starts here.
                    self.leaders.insert(ip);
                    break;
                }
                let ins = self.decode(ip)?;
                if self.insns.len() >= MAX_INSNS {
                    return Err(FlowError::TooLarge);
                }
                self.insns.insert(ip, ins);
                let next = ins.next_ip();
                match ins.flow_control() {
                    FlowControl::Next => ip = next,
                    FlowControl::Call | FlowControl::IndirectCall => {
                        if ins.flow_control() == FlowControl::Call {
                            self.calls.push((ip, ins.near_branch_target()));
                        }
                        // A call that never returns is followed by a trap.
                        if self.img.byte(next) == Some(0xcc) {
                            break;
                        }
                        ip = next;
                    }
                    FlowControl::UnconditionalBranch => {
                        if is_near_branch(&ins) {
                            let t = ins.near_branch_target();
                            // A jump to another function is a tail call.
                            if !self.is_outside(t) {
                                self.leaders.insert(t);
                                work.push(t);
                            }
                        } else {
                            // far jumps: nothing a compiler emits here
                            self.indirect_jumps += 1;
                        }
                        break;
                    }
                    FlowControl::ConditionalBranch => {
                        let t = ins.near_branch_target();
                        if !self.is_outside(t) {
                            self.leaders.insert(t);
                            work.push(t);
                        }
                        self.leaders.insert(next);
                        work.push(next);
                        break;
                    }
                    FlowControl::IndirectBranch => {
                        self.indirect_jumps += 1;
                        break;
                    }
                    FlowControl::Return
                    | FlowControl::Interrupt
                    | FlowControl::Exception
                    | FlowControl::XbeginXabortXend => break,
                }
            }
        }
        Ok(())
    }

    fn decode(&self, ip: u64) -> Result<Instruction, FlowError> {
        let code = self.img.code_at(ip).ok_or(FlowError::NotCode(ip))?;
        let window = &code[..code.len().min(15)];
        let mut dec = Decoder::with_ip(64, window, ip, DecoderOptions::NONE);
        let ins = dec.decode();
        if ins.is_invalid() {
            return Err(FlowError::Invalid(ip));
        }
        // No instruction may start inside another one.
        if let Some((&a, prev)) = self.insns.range(..ip).next_back() {
            if a + prev.len() as u64 > ip {
                return Err(FlowError::Overlap(ip));
            }
        }
        if self.insns.range(ip + 1..ins.next_ip()).next().is_some() {
            return Err(FlowError::Overlap(ip));
        }
        Ok(ins)
    }

    /// A direct branch target that belongs to another function.
    fn is_outside(&self, t: u64) -> bool {
        t < self.entry
            || t - self.entry >= MAX_SPAN
            || (t != self.entry && xref::is_padded_start(self.img, t))
            || self.img.code_at(t).is_none()
    }
}

fn is_near_branch(i: &Instruction) -> bool {
    matches!(
        i.op0_kind(),
        OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
    )
}

fn ends_block(i: &Instruction) -> bool {
    !matches!(
        i.flow_control(),
        FlowControl::Next | FlowControl::Call | FlowControl::IndirectCall
    )
}

/// Splits the decoded instructions into basic blocks with successors.
fn blocks(
    img: &Image<'_>,
    insns: &BTreeMap<u64, Instruction>,
    leaders: &BTreeSet<u64>,
    entry: u64,
) -> BTreeMap<u64, Block> {
    let outside = |t: u64| {
        t < entry || t - entry >= MAX_SPAN || (t != entry && xref::is_padded_start(img, t))
    };
    let mut out = BTreeMap::new();
    let mut cur: Option<(u64, Vec<u64>)> = None;
    let mut expected_next: Option<u64> = None;
    for (&a, ins) in insns {
        let starts = leaders.contains(&a) || expected_next != Some(a);
        if starts {
            if let Some((s, v)) = cur.take() {
                let succ = if expected_next == Some(a) {
                    vec![a]
                } else {
                    Vec::new()
                };
                out.insert(
                    s,
                    Block {
                        insns: v,
                        succs: succ,
                    },
                );
            }
            cur = Some((a, Vec::new()));
        }
        if let Some((_, v)) = cur.as_mut() {
            v.push(a);
        }
        if ends_block(ins) {
            let mut succs = Vec::new();
            match ins.flow_control() {
                FlowControl::ConditionalBranch => {
                    let t = ins.near_branch_target();
                    if !outside(t) {
                        succs.push(t);
                    }
                    succs.push(ins.next_ip());
                }
                FlowControl::UnconditionalBranch if is_near_branch(ins) => {
                    let t = ins.near_branch_target();
                    if !outside(t) {
                        succs.push(t);
                    }
                }
                _ => {}
            }
            if let Some((s, v)) = cur.take() {
                out.insert(s, Block { insns: v, succs });
            }
            expected_next = None;
        } else {
            // Falls through unless it is a call that does not return (its
            // next instruction was not decoded).
            expected_next = Some(ins.next_ip()).filter(|n| insns.contains_key(n));
        }
    }
    if let Some((s, v)) = cur.take() {
        out.insert(
            s,
            Block {
                insns: v,
                succs: Vec::new(),
            },
        );
    }
    out
}

fn writes_heap(info: &mut InstructionInfoFactory, ins: &Instruction) -> bool {
    if matches!(
        ins.flow_control(),
        FlowControl::Call | FlowControl::IndirectCall
    ) || ins.mnemonic() == Mnemonic::Push
    {
        return false;
    }
    info.info(ins).used_memory().iter().any(|m| {
        matches!(
            m.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        ) && !matches!(
            m.base(),
            Register::RSP | Register::RBP | Register::ESP | Register::EBP
        )
    })
}

const ARG_REGS: [Register; 3] = [Register::RDI, Register::RSI, Register::RDX];

fn arg_index(r: Register) -> Option<usize> {
    let full = r.full_register();
    ARG_REGS.iter().position(|&a| a == full)
}

fn is_read(a: OpAccess) -> bool {
    matches!(
        a,
        OpAccess::Read | OpAccess::CondRead | OpAccess::ReadWrite | OpAccess::ReadCondWrite
    )
}

fn is_write(a: OpAccess) -> bool {
    matches!(a, OpAccess::Write | OpAccess::ReadWrite)
}

/// Which of rdi, rsi, rdx are read before being written on some path: a
/// must-written dataflow over the blocks (a call clobbers all three).
fn args_read(f: &Function, info: &mut InstructionInfoFactory) -> [bool; 3] {
    const ALL: u8 = 0b111;
    let mut preds: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (&b, blk) in &f.blocks {
        for &s in &blk.succs {
            preds.entry(s).or_default().push(b);
        }
    }
    let transfer = |info: &mut InstructionInfoFactory, blk: &Block, mut w: u8, read: &mut u8| {
        for a in &blk.insns {
            let ins = &f.insns[a];
            for u in info.info(ins).used_registers() {
                if let Some(k) = arg_index(u.register()) {
                    if is_read(u.access()) && w & (1 << k) == 0 {
                        *read |= 1 << k;
                    }
                }
            }
            for u in info.info(ins).used_registers() {
                if let Some(k) = arg_index(u.register()) {
                    if is_write(u.access()) {
                        w |= 1 << k;
                    }
                }
            }
            if matches!(
                ins.flow_control(),
                FlowControl::Call | FlowControl::IndirectCall
            ) {
                w = ALL;
            }
        }
        w
    };
    let mut out: BTreeMap<u64, u8> = f.blocks.keys().map(|&b| (b, ALL)).collect();
    let mut dummy = 0u8;
    loop {
        let mut changed = false;
        for (&b, blk) in &f.blocks {
            let inw = if b == f.entry {
                0
            } else {
                preds
                    .get(&b)
                    .map_or(0, |ps| ps.iter().fold(ALL, |acc, p| acc & out[p]))
            };
            let o = transfer(info, blk, inw, &mut dummy);
            if out[&b] != o {
                out.insert(b, o);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut read = 0u8;
    for (&b, blk) in &f.blocks {
        let inw = if b == f.entry {
            0
        } else {
            preds
                .get(&b)
                .map_or(0, |ps| ps.iter().fold(ALL, |acc, p| acc & out[p]))
        };
        transfer(info, blk, inw, &mut read);
    }
    [read & 1 != 0, read & 2 != 0, read & 4 != 0]
}

/// The constant a `mov`/`xor`/`lea` puts in its destination register.
fn constant_load(ins: &Instruction) -> Option<(Register, u64)> {
    if ins.op0_kind() != OpKind::Register {
        return None;
    }
    let dst = ins.op0_register();
    let is32 = dst.is_gpr32();
    if !(is32 || dst.is_gpr64()) {
        return None;
    }
    let v = match ins.mnemonic() {
        Mnemonic::Mov => match ins.op1_kind() {
            OpKind::Immediate32 | OpKind::Immediate32to64 | OpKind::Immediate64 => ins.immediate(1),
            _ => return None,
        },
        Mnemonic::Xor | Mnemonic::Sub
            if ins.op1_kind() == OpKind::Register && ins.op1_register() == dst =>
        {
            0
        }
        Mnemonic::Lea if ins.is_ip_rel_memory_operand() && dst.is_gpr64() => {
            ins.ip_rel_memory_address()
        }
        _ => return None,
    };
    let v = if is32 { v & 0xffff_ffff } else { v };
    Some((dst.full_register(), v))
}

fn reg_slot(r: Register) -> Option<usize> {
    const SLOTS: [Register; 16] = [
        Register::RAX,
        Register::RCX,
        Register::RDX,
        Register::RBX,
        Register::RSP,
        Register::RBP,
        Register::RSI,
        Register::RDI,
        Register::R8,
        Register::R9,
        Register::R10,
        Register::R11,
        Register::R12,
        Register::R13,
        Register::R14,
        Register::R15,
    ];
    let full = r.full_register();
    SLOTS.iter().position(|&s| s == full)
}

/// Every instruction that loads one of `files` is followed, from the start
/// of its block, straight to the next call: that call is an error site when
/// an argument register holds the name there. Two calling conventions are
/// seen in `BoringSSL` builds:
/// - `ERR_put_error(lib, 0, reason, file, line)`: file in rcx (Bun 1.4);
/// - `(lib, reason, file, line)`: file in rdx (Bun 1.1 to 1.3).
fn read_sites(img: &Image<'_>, f: &mut Function, files: &[u64], info: &mut InstructionInfoFactory) {
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RSI: usize = 6;
    const RDI: usize = 7;
    const R8: usize = 8;
    let loads: Vec<u64> = f
        .insns
        .iter()
        .filter(|(_, i)| constant_load(i).is_some_and(|(_, v)| files.contains(&v)))
        .map(|(a, _)| *a)
        .collect();
    let holds = |v: Option<u64>| v.is_some_and(|v| files.contains(&v));
    for load in loads {
        let Some((&bstart, _)) = f.block_of(load) else {
            f.unresolved_loads += 1;
            continue;
        };
        let Some((at, callee, regs)) = follow_to_call(img, f, bstart, load, info) else {
            f.unresolved_loads += 1;
            continue;
        };
        let site = if holds(regs[RCX]) && matches!(regs[RSI], None | Some(0)) {
            ErrSite {
                at,
                callee,
                lib: regs[RDI],
                reason: regs[RDX],
                line: regs[R8],
            }
        } else if holds(regs[RDX]) {
            ErrSite {
                at,
                callee,
                lib: regs[RDI],
                reason: regs[RSI],
                line: regs[RCX],
            }
        } else {
            f.unresolved_loads += 1;
            continue;
        };
        if !f.sites.contains(&site) {
            f.sites.push(site);
        }
    }
    f.sites.sort_by_key(|s| (s.line, s.at));
}

/// Simulates constant loads from `start` until the first call after `load`;
/// returns the call, its direct target and the register state there.
fn follow_to_call(
    img: &Image<'_>,
    f: &Function,
    start: u64,
    load: u64,
    info: &mut InstructionInfoFactory,
) -> Option<(u64, Option<u64>, [Option<u64>; 16])> {
    let mut regs: [Option<u64>; 16] = [None; 16];
    let mut ip = start;
    let mut passed = false;
    let mut jumps = 0;
    for _ in 0..SITE_MAX_INSNS {
        // Shared error tails may sit outside the decoded set only if the
        // function jumps there; decode on the fly from the image then.
        let ins = if let Some(i) = f.insns.get(&ip) {
            *i
        } else {
            let code = img.code_at(ip)?;
            let mut dec =
                Decoder::with_ip(64, &code[..code.len().min(15)], ip, DecoderOptions::NONE);
            let i = dec.decode();
            if i.is_invalid() {
                return None;
            }
            i
        };
        if ip == load {
            passed = true;
        }
        match ins.flow_control() {
            FlowControl::Call | FlowControl::IndirectCall => {
                if passed {
                    let callee =
                        (ins.flow_control() == FlowControl::Call).then(|| ins.near_branch_target());
                    return Some((ip, callee, regs));
                }
                // caller-saved registers are gone
                for r in [0, 1, 2, 6, 7, 8, 9, 10, 11] {
                    regs[r] = None;
                }
                ip = ins.next_ip();
                continue;
            }
            FlowControl::UnconditionalBranch if is_near_branch(&ins) && passed => {
                jumps += 1;
                if jumps > SITE_MAX_JUMPS {
                    return None;
                }
                ip = ins.near_branch_target();
                continue;
            }
            FlowControl::Next => {}
            _ => return None,
        }
        if let Some((r, v)) = constant_load(&ins) {
            if let Some(k) = reg_slot(r) {
                regs[k] = Some(v);
            }
        } else {
            for u in info.info(&ins).used_registers() {
                if matches!(
                    u.access(),
                    OpAccess::Write
                        | OpAccess::CondWrite
                        | OpAccess::ReadWrite
                        | OpAccess::ReadCondWrite
                ) {
                    if let Some(k) = reg_slot(u.register()) {
                        regs[k] = None;
                    }
                }
            }
        }
        ip = ins.next_ip();
    }
    None
}
